"""The VM tier's server disk: a Debian 12 or 13 system as a provider's installer leaves
it, built natively with mmdebstrap and cached by content.

What the disk holds (fjord itself is installed later, over SSH, from its bundle):

- Debian's kernel and initramfs, systemd as init, udev, ifupdown, openssh-server,
  python3, and the tools an installer leaves; APT pointed at the provider's mirror;
- the installer's network, the same files as the lab's server (fjord.lab.files):
  ``/etc/network/interfaces`` with ``source /etc/network/interfaces.d/*``, ``auto
  ens3`` and the static addresses (IPv4, IPv6 with the link-local gateway), the
  resolvers, hostname and hosts; root's SSH key (the tier's own, generated once);
- fjord's heavy host packages, preinstalled (see PREINSTALLED), and the containers'
  image in fjord's image cache (the server has no Internet to build it).

Built next to it (same cache, same key):

- ``mirror/``: the provider's Debian mirror for the scenario. Debian's own signed
  index files (InRelease, Packages, as APT fetched them while building) and the
  ``.deb`` files the scenario installs, at the paths the index names, so that
  ``apt-get update`` and ``apt-get install`` on the server run for real, checked
  against Debian's keys, without the Internet;
- ``builder/``: a chroot of the same release with compilers, where
  ``scripts/bundle`` builds fjord's offline bundle for that release's Python
  (libvirt-python and ovs compile: done here, natively, not under emulation).

The kernel and initramfs are copied out, because QEMU starts the kernel directly
(``-kernel``): the bootloader is the one part of a real boot this tier skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fjord.lab import files as installer
from fjord.lab.spec import LabSpec

CACHE = Path(os.environ.get("FJORD_VM_CACHE", "/var/cache/fjord-vm"))
# Bump when the recipe below changes what a disk holds.
RECIPE = 4
DISK_SIZE = "6G"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
UPLINK = "ens3"  # the `pc` machine with virtio-net in PCI slot 3 (DESIGN, real-boot fact 1)

RELEASES = {"bookworm": "12", "trixie": "13"}

# What the provider's installer leaves (a minimal Debian with SSH), plus python3,
# which the README asks a server owner to have before installing fjord.
INSTALLER_PACKAGES = (
    "systemd-sysv", "udev", "dbus", "linux-image-amd64", "initramfs-tools", "ifupdown",
    "openssh-server", "iproute2", "iputils-ping", "netbase", "kmod", "procps",
    "ca-certificates", "less", "python3", "e2fsprogs",
)
# fjord's heavy host packages (fjord.host.packages.REQUIRED), installed at build time:
# their installation under emulation takes minutes (measured: docs/vm.md), the same
# dpkg run natively takes seconds. fjord's apply finds them installed.
PREINSTALLED = (
    "openvswitch-switch", "libvirt-daemon-system", "libvirt-daemon-driver-lxc",
    "libvirt-clients", "nftables", "mmdebstrap",
)
SERVER_PACKAGES = INSTALLER_PACKAGES + PREINSTALLED
# What the scenario installs from the provider's mirror, for real, on the server: the
# install script's python3-venv, and what fjord's apply installs (host.packages of
# tests/vm/server.yaml, and any fjord host package not preinstalled).
# lxcfs is small (with fuse3 and libfuse3-3): apply installs it for real, and its unit
# starts under the VM's systemd.
MIRROR_PACKAGES = ("python3-venv", "libvirt0", "tree", "lxcfs")
BUILDER_PACKAGES = (
    "python3", "python3-venv", "python3-dev", "gcc", "pkg-config", "libvirt-dev",
    "ca-certificates", "git",
)


def log(message: str) -> None:
    """Progress on stderr (bench/vm_boot.py prints its JSON on stdout)."""
    print(f"vm: {message}", file=sys.stderr, flush=True)


def sh(argv: list[str], *, input: str = "", timeout: float = 1800,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a build step; fail loudly with the end of its stderr."""
    start = time.monotonic()
    proc = subprocess.run(argv, text=True, capture_output=True, input=input,
                          timeout=timeout, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}… failed ({proc.returncode}) after "
                           f"{time.monotonic() - start:.0f} s:\n{proc.stderr[-4000:]}")
    return proc


def sources(suite: str) -> str:
    security = f"{suite}-security"
    return (f"deb {MIRROR} {suite} main\n"
            f"deb {MIRROR} {suite}-updates main\n"
            f"deb {SECURITY} {security} main\n")


@dataclass(frozen=True)
class Disk:
    """A built server disk and what comes with it."""

    suite: str
    dir: Path

    @property
    def image(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def mirror(self) -> Path:
        return self.dir / "mirror"

    @property
    def builder(self) -> Path:
        return CACHE / f"builder-{self.suite}"

    @property
    def key(self) -> Path:
        return CACHE / "id_ed25519"

    @property
    def meta(self) -> dict[str, object]:
        return json.loads((self.dir / "meta.json").read_text())


def ssh_key() -> Path:
    key = CACHE / "id_ed25519"
    if not key.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fjord-vm-tier",
            "-f", str(key)])
    return key


def _recipe(suite: str, spec: LabSpec, extras: dict[str, Path]) -> str:
    server = {k: v for k, v in spec.to_json().items()  # what the disk holds of the spec
              if k in ("fqdn", "ipv4", "gateway4", "ipv6", "gateway6", "dns")}
    return json.dumps({"recipe": RECIPE, "suite": suite, "server": server,
                       "extras": {k: v.name for k, v in extras.items()},
                       "packages": SERVER_PACKAGES, "mirror": MIRROR_PACKAGES,
                       "pubkey": (ssh_key().with_suffix(".pub")).read_text()},
                      sort_keys=True)


def disk(suite: str, spec: LabSpec, extras: dict[str, Path] | None = None) -> Disk:
    """The server disk for ``suite`` and ``spec``: cached, or built now (a few minutes).
    ``extras`` are directories copied in ({path on the server: source}), named in the
    key by their source's name (content-addressed, like fjord's image keys)."""
    extras = extras or {}
    if suite not in RELEASES:
        raise ValueError(f"the VM tier boots {', '.join(RELEASES)}, not {suite}")
    recipe = _recipe(suite, spec, extras)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    found = Disk(suite, CACHE / f"server-{suite}-{key}")
    if (found.dir / "meta.json").exists():
        return found
    building = CACHE / f".building-{suite}-{key}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        start = time.monotonic()
        _build(suite, spec, building, extras)
        (building / "meta.json").write_text(json.dumps(
            {"recipe": json.loads(recipe), "seconds": round(time.monotonic() - start, 1),
             "built": time.time()}, indent=1))
        building.rename(found.dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return found


def _build(suite: str, spec: LabSpec, out: Path, extras: dict[str, Path]) -> None:
    root = out / "root"
    pool = out / "debs"
    root.mkdir()
    pool.mkdir()
    log(f"building the Debian {RELEASES[suite]} ({suite}) server disk with mmdebstrap")
    hooks = [
        # The mirror's .debs: what the scenario installs later, downloaded (not installed)
        # with the server's own APT, so that the versions fit what is installed.
        f'chroot "$1" apt-get install --download-only -y -q {" ".join(MIRROR_PACKAGES)}',
        f'sync-out /var/cache/apt/archives {pool}',
        f'sync-out /var/lib/apt/lists {out}/lists',
        'rm -f "$1"/var/cache/apt/archives/*.deb',
    ]
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            "--skip=download/empty",
            f"--include={','.join(SERVER_PACKAGES)}"]
    argv += [f"--customize-hook={h}" for h in hooks]
    argv += [suite, str(root), "-"]
    start = time.monotonic()
    sh(argv, input=sources(suite))
    log(f"  root filesystem in {time.monotonic() - start:.0f} s")
    install_files(root, spec)
    for target, source in extras.items():
        # cp -a: a root filesystem holds device nodes (shutil would read /dev/zero).
        dest = root / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        sh(["cp", "-a", str(source), str(dest)])
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"no kernel or initramfs in {root}/boot")
    shutil.copy2(kernels[-1], out / "vmlinuz")
    shutil.copy2(initrds[-1], out / "initrd.img")
    make_mirror(out / "lists", pool, out / "mirror")
    shutil.rmtree(pool)
    sh(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", str(root),
        str(out / "disk.raw"), DISK_SIZE])
    shutil.rmtree(root)


def install_files(root: Path, spec: LabSpec) -> None:
    """What the installer leaves besides packages: network, names, resolvers, root's key."""
    def put(path: str, text: str, mode: int = 0o644) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(mode)

    if spec.uplink != UPLINK:
        raise ValueError(f"the VM's NIC is {UPLINK}, the configuration says {spec.uplink}")
    # The same installer state as the lab's server: interfaces, resolv.conf, hosts, hostname.
    for path, text in installer.server_files(spec).items():
        put(f"/etc/{path}", text)
    (root / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
    put("/etc/fstab", "/dev/vda / ext4 errors=remount-ro 0 1\n")
    # The provider's image: no translations to fetch from its mirror.
    put("/etc/apt/apt.conf.d/90provider", 'Acquire::Languages "none";\n')
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    put("/root/.ssh/authorized_keys", ssh_key().with_suffix(".pub").read_text(), 0o600)


# --- the provider's mirror ----------------------------------------------------------------

_LIST = re.compile(r"^(?P<host>[^_]+)_(?P<path>.+)$")


def make_mirror(lists: Path, pool: Path, mirror: Path) -> None:
    """A partial Debian mirror: APT's own copies of the signed index files, and the
    downloaded .debs at the paths the indexes name.

    APT stores ``deb.debian.org_debian_dists_bookworm_InRelease`` and the uncompressed
    ``…_main_binary-amd64_Packages``; InRelease lists the uncompressed Packages too, so
    a client that finds no compressed file falls back to it, and its hashes match."""
    mirror.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    for deb in pool.glob("*.deb"):
        # APT names a downloaded file with its version's epoch (procps_2%3a4.0.2-3_amd64);
        # the archive's Filename has none.
        wanted[re.sub(r"_\d+%3a", "_", deb.name)] = str(deb)
    placed: set[str] = set()
    for f in sorted(lists.iterdir()):
        m = _LIST.match(f.name)
        if not m or f.name.endswith((".gpg", "lock")) or not f.is_file():
            continue
        rel = m["path"].replace("_", "/")
        dest = mirror / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
        if not f.name.endswith("_Packages"):
            continue
        archive = rel.split("/dists/")[0]
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                          if ": " in line and not line.startswith(" "))
            filename = fields.get("Filename", "")
            source = wanted.get(Path(filename).name)
            if source:
                target = mirror / archive / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copy2(source, target)
                placed.add(Path(filename).name)
    missing = sorted(set(wanted) - placed)
    log(f"  mirror: {len(placed)} package(s); not in any index: {', '.join(missing) or 'none'}")



# --- fjord's bundle, built for the guest's release ------------------------------------------

def builder(suite: str) -> Path:
    """A chroot of ``suite`` with compilers (cached): where the bundle is built."""
    root = CACHE / f"builder-{suite}"
    stamp = root / ".fjord-builder"
    recipe = json.dumps({"recipe": RECIPE, "packages": BUILDER_PACKAGES})
    if stamp.exists() and stamp.read_text() == recipe:
        return root
    shutil.rmtree(root, ignore_errors=True)
    log(f"building the Debian {RELEASES[suite]} ({suite}) build chroot for fjord's bundle")
    building = CACHE / f".builder-{suite}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    sh(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
        f"--include={','.join(BUILDER_PACKAGES)}", suite, str(building), "-"],
       input=sources(suite))
    (building / ".fjord-builder").write_text(recipe)
    building.rename(root)
    return root


def bundle(suite: str, checkout: Path) -> Path:
    """fjord's offline bundle for ``suite`` (scripts/bundle, run in the build chroot on
    a copy of the checkout's files as they are now, committed or not)."""
    root = builder(suite)
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    listed = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=checkout).stdout.split("\0")
    for rel in filter(None, listed):
        source = checkout / rel
        if source.is_file():
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    # pip in the chroot trusts what this machine trusts (a proxy's CA, say).
    ca = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
    if os.path.isfile(ca):
        shutil.copy2(ca, root / "etc/fjord-vm-ca.crt")
        env.append("PIP_CERT=/etc/fjord-vm-ca.crt")
    env += [f"{k}={v}" for k, v in os.environ.items()
            if k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT")]
    start = time.monotonic()
    sh(["unshare", "--fork", "--pid", "--mount", "--propagation", "private",
        f"--mount-proc={root}/proc", "chroot", str(root),
        "/usr/bin/env", "-i", *env, "/bin/bash", "/src/scripts/bundle", "/out"])
    made = sorted(out.glob("fjord-*.tar.gz"))
    if not made:
        raise RuntimeError("scripts/bundle made no bundle")
    log(f"  fjord's bundle for {suite} in {time.monotonic() - start:.0f} s: {made[-1].name}")
    return made[-1]
