"""What makes a shared image one particular container: files written into its root.

Everything is a file operation from the host (see :mod:`fjord.containers.tree`); the
image's own programs never run. The only program run is the host's ``ssh-keygen``,
once per container, into a private temporary directory.

Written per container (and why):

- ``/etc/hostname``, ``/etc/hosts``: the short name, and the FQDN on its own addresses
  so that ``hostname -f`` answers without DNS; then the host's and the other
  containers' names, so that containers resolve each other with no resolver to run.
- ``/etc/resolv.conf``: the host's configured DNS servers (IPv6 ones only when the
  container has IPv6; glibc reads the first three).
- ``/etc/network/interfaces``: static addresses (see :func:`interfaces`), read by
  ifupdown's networking.service at boot.
- ``/etc/default/locale``: LANG (other than C.UTF-8, generated into the image). Where
  the suite makes it a link (trixie: ``../locale.conf``), the file it designates inside
  the root is written and the link kept (:func:`placed`).
- ``/etc/machine-id``: random, made once; never shared (journald, DHCP DUIDs and
  systemd derive identities from it).
- ``/etc/ssh/ssh_host_{ed25519,ecdsa}_key``: made once per container by the host's
  ssh-keygen; RSA is left out because a 3072-bit key takes a second to make and every
  OpenSSH client since 2014 speaks Ed25519.
- ``/etc/ssh/sshd_config.d/fjord.conf``: keys only (no passwords), and the host keys above.
- ``/root/.ssh/authorized_keys`` (0600, in 0700): the configured keys.
- root's password in ``/etc/shadow`` locked (``*``) if it is anything else.
- Puppet (when configured): ``/etc/puppet/puppet.conf`` with the server and
  certname = FQDN; the agent's service enabled only with ``puppet.enable``.
- ``/usr/local/sbin/fjord-init`` (0755): the domain's init, which puts the container
  in a cgroup namespace of its own before it becomes /sbin/init, so that systemd keeps
  the container's processes inside their limits (see :mod:`fjord.containers.limits`).
- ``/usr/local/lib/fjord/fjord-seccomp`` (0755, perl) and ``seccomp.bpf`` (0644), on
  x86_64: what fjord-init runs last, dropping capabilities and installing the syscall
  filter (see :mod:`fjord.containers.sandbox`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, ip_address
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from fjord.config.desired import with_kept
from fjord.containers.limits import INIT_PATH, init_script
from fjord.containers.sandbox import FILTER_PATH, LOADER_PATH, bpf_program, loader_script
from fjord.containers.tree import Tree
from fjord.runner import run

if TYPE_CHECKING:
    from fjord.config.desired import Container, Desired

HEADER = "# Written by fjord; changes here are overwritten by `fjord apply`.\n"
# glibc's resolver uses at most this many nameserver lines (MAXNS).
MAXNS = 3
HOST_KEY_TYPES = ("ed25519", "ecdsa")
PUPPET_UNIT = "puppet.service"
PUPPET_WANTS = f"/etc/systemd/system/multi-user.target.wants/{PUPPET_UNIT}"
# In routed mode the host answers on the internal bridge as this link-local address
# (fjord.net.interfaces.ROUTED_GATEWAY6; duplicated so that customisation does not
# import the network modules, and pinned by a unit test).
ROUTED_GATEWAY6 = "fe80::1"


@dataclass(frozen=True)
class RootFile:
    path: str
    content: bytes
    mode: int = 0o644
    # The suite's layout decides where the content lives: when ``path`` is a symbolic
    # link (trixie's /etc/default/locale → ../locale.conf), the file it designates is
    # written, and the link kept (see :func:`placed`). Otherwise a link is replaced.
    follow: bool = False


@dataclass(frozen=True)
class RootLink:
    """A symbolic link that must exist (``target``) or not exist (``target`` None)."""

    path: str
    target: str | None


@dataclass(frozen=True)
class Network:
    """A container's addresses as its interfaces file states them."""

    ipv4: str                   # address/prefix
    gateway4: str
    ipv6: str | None = None     # address/prefix
    gateway6: str | None = None
    ipv6_device: str = "eth1"   # eth1 on the external bridge, or eth0 when routed


def network_for(container: Container, desired: Desired) -> Network:
    """Where each address lives.

    Bridged IPv6: eth1 on the external bridge, the /64 on-link, the provider's gateway.
    Routed IPv6: no interface on the external bridge at all (that is what keeps the
    container's MAC off the uplink); the address is a /128 on eth0 and the host, which
    routes it over the internal bridge, is the gateway as fe80::1 there.
    """
    host = desired.host
    private = host.private.address
    net = Network(ipv4=f"{container.ipv4}/{private.network.prefixlen}",
                  gateway4=str(private.ip))
    if container.ipv6 is None or host.ipv6 is None:
        return net
    if host.ipv6.effective_mode == "routed":
        return Network(net.ipv4, net.gateway4, f"{container.ipv6}/128", ROUTED_GATEWAY6, "eth0")
    prefix = host.ipv6.address.network.prefixlen
    return Network(net.ipv4, net.gateway4, f"{container.ipv6}/{prefix}",
                   str(host.ipv6.gateway), "eth1")


def interfaces(net: Network) -> str:
    """ifupdown's /etc/network/interfaces: static addresses, no router advertisements
    (the addresses are fjord's, not SLAAC's), no duplicate address detection (fjord
    allocates them uniquely; DAD would hold IPv6 back for a second at every boot)."""
    lines = [HEADER.rstrip("\n"), "", "auto lo", "iface lo inet loopback", "",
             "# private IPv4 on the internal bridge, NATed by the host", "auto eth0",
             "iface eth0 inet static", f"    address {net.ipv4}",
             f"    gateway {net.gateway4}",
             "    # say hello to the gateway: its ARP request tells the host this address's",
             "    # MAC now, instead of after the host's next retry (up to a second later)",
             f"    up ping -c 1 -W 1 -q {net.gateway4} >/dev/null 2>&1 || true"]
    if net.ipv6 is not None:
        lines.append("")
        if net.ipv6_device == "eth0":
            lines.append("# public IPv6, routed by the host over the internal bridge")
        else:
            lines += ["# public IPv6 on the external bridge", f"auto {net.ipv6_device}"]
        lines += [f"iface {net.ipv6_device} inet6 static", f"    address {net.ipv6}",
                  f"    gateway {net.gateway6}", "    accept_ra 0", "    autoconf 0",
                  "    dad-attempts 0"]
    return "\n".join(lines) + "\n"


def hosts(container: Container, desired: Desired | None = None) -> str:
    """Its own names on its own addresses, then (given ``desired``) the host's and every
    other container's, so that containers resolve each other and the host by name
    without a resolver: private IPv4 always (the internal bridge joins them), public
    IPv6 too when both ends have it. Kept containers (out of the file, not pruned) are
    listed as long as they exist, as on the host."""
    short = container.fqdn.partition(".")[0]
    lines = [HEADER.rstrip("\n"), "127.0.0.1\tlocalhost",
             f"{container.ipv4}\t{container.fqdn} {short}"]
    if container.ipv6 is not None:
        lines.append(f"{container.ipv6}\t{container.fqdn} {short}")
    if desired is not None:
        host = desired.host
        lines += ["", "# the host, on the internal bridge",
                  f"{host.private.address.ip}\t{host.fqdn} {host.hostname}",
                  "# the other containers"]
        for peer in sorted(with_kept(desired).containers, key=lambda c: c.name):
            if peer.name == container.name:
                continue
            names = f"{peer.fqdn} {peer.fqdn.partition('.')[0]}"
            lines.append(f"{peer.ipv4}\t{names}")
            if peer.ipv6 is not None and container.ipv6 is not None:
                lines.append(f"{peer.ipv6}\t{names}")
    lines += ["", "::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes",
              "ff02::2\tip6-allrouters"]
    return "\n".join(lines) + "\n"


def resolv_conf(container: Container, dns: Sequence[object]) -> str:
    servers = [str(s) for s in dns
               if container.ipv6 is not None or not isinstance(ip_address(str(s)), IPv6Address)]
    domain = container.fqdn.partition(".")[2]
    lines = [HEADER.rstrip("\n")]
    if domain:
        lines.append(f"search {domain}")
    lines += [f"nameserver {s}" for s in servers[:MAXNS]]
    return "\n".join(lines) + "\n"


def sshd_config() -> str:
    lines = [HEADER.rstrip("\n"), "# Keys only: root has no password and none is accepted.",
             "PermitRootLogin prohibit-password", "PasswordAuthentication no",
             "KbdInteractiveAuthentication no",
             "# This container's own host keys (made by fjord, never shared)."]
    lines += [f"HostKey /etc/ssh/ssh_host_{t}_key" for t in HOST_KEY_TYPES]
    return "\n".join(lines) + "\n"


def authorized_keys(container: Container) -> str:
    if not container.ssh_keys:
        return HEADER + f"# no keys configured (containers.{container.name}.ssh_keys)\n"
    return HEADER + "".join(f"{key}\n" for key in container.ssh_keys)


def puppet_conf(container: Container) -> str | None:
    if container.puppet is None:
        return None
    return (HEADER + "[main]\n"
            f"server = {container.puppet.server}\n"
            f"certname = {container.fqdn}\n")


def files_for(container: Container, desired: Desired,
              unprivileged: bool = False) -> list[RootFile | RootLink]:
    """The files and links a container's root must have (besides machine-id and host
    keys, which are made once and then kept). ``unprivileged``: the kernel's debug and
    trace filesystems cannot be mounted from a user namespace: their units are masked
    (or systemd counts them failed)."""
    short = container.fqdn.partition(".")[0]
    out: list[RootFile | RootLink] = [
        RootFile("/etc/hostname", f"{short}\n".encode()),
        RootFile("/etc/hosts", hosts(container, desired).encode()),
        RootFile("/etc/resolv.conf", resolv_conf(container, desired.host.dns).encode()),
        RootFile("/etc/network/interfaces",
                 interfaces(network_for(container, desired)).encode()),
        RootFile("/etc/default/locale", f"LANG={container.locale}\n".encode(), follow=True),
        RootFile("/etc/ssh/sshd_config.d/fjord.conf", sshd_config().encode()),
        RootFile("/root/.ssh/authorized_keys", authorized_keys(container).encode(), 0o600),
        RootFile(INIT_PATH, init_script().encode(), 0o755),
    ]
    if os.uname().machine == "x86_64":  # the only syscall table fjord has
        out.append(RootFile(LOADER_PATH, loader_script().encode(), 0o755))
        out.append(RootFile(FILTER_PATH, bpf_program()))
    conf = puppet_conf(container)
    if conf is not None:
        assert container.puppet is not None
        out.append(RootFile("/etc/puppet/puppet.conf", conf.encode()))
        out.append(RootLink(PUPPET_WANTS, f"/lib/systemd/system/{PUPPET_UNIT}"
                            if container.puppet.enable else None))
    if unprivileged:
        out += [RootLink(f"/etc/systemd/system/{unit}", "/dev/null") for unit in USERNS_MASKED]
    return out


# systemd units that can only fail in a user namespace.
USERNS_MASKED = ("sys-kernel-debug.mount", "sys-kernel-tracing.mount",
                 "sys-kernel-config.mount", "sys-fs-fuse-connections.mount")


# Links are followed this many times at most (a loop is not followed at all).
MAX_LINKS = 8
# Where a followed link must not lead: what is not the image's at run time (mounted
# over when the container runs), and the files fjord makes besides files_for's.
VOLATILE = ("/run", "/proc", "/sys", "/dev", "/tmp")
OWN = ("/etc/shadow", "/etc/machine-id",
       *(f"/etc/ssh/ssh_host_{t}_key{s}" for t in HOST_KEY_TYPES for s in ("", ".pub")))


def resolve(tree: Tree, path: str) -> str | None:
    """The file ``path`` designates in the root, its symbolic links followed as the
    container sees them (an absolute target from the root, a relative one from the
    link's directory); None when a link climbs out of the root or they loop."""
    current = PurePosixPath("/", path.lstrip("/"))
    for _ in range(MAX_LINKS):
        target = tree.readlink(str(current))
        if target is None:
            return str(current)
        start = PurePosixPath("/") if target.startswith("/") else current.parent
        parts: list[str] = []
        for part in (start / target).parts[1:]:
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    return None  # above the root: never followed
                parts.pop()
            else:
                parts.append(part)
        current = PurePosixPath("/", *parts)
    return None


def placed(tree: Tree, items: list[RootFile | RootLink]) -> list[RootFile | RootLink]:
    """``items`` where the root's layout puts them: a ``follow`` file that is a link
    becomes the file the link designates, when that stays inside the root, is not
    volatile and is no other file fjord manages; otherwise the link is replaced by the
    file, as any link is (the container's root user may have planted it)."""
    managed = {item.path for item in items} | set(OWN)
    out: list[RootFile | RootLink] = []
    for item in items:
        if isinstance(item, RootFile) and item.follow:
            where = resolve(tree, item.path)
            if (where is not None and where != item.path and where not in managed
                    and not any(where == v or where.startswith(v + "/") for v in VOLATILE)):
                item = replace(item, path=where)
        out.append(item)
    return out


def customize(root: Path, container: Container, desired: Desired,
              owner: int | None = None) -> list[str]:
    """Bring a container's root to what fjord declares; the paths that changed. ``owner``:
    the host id of an unprivileged container's root, which owns every file written.

    Idempotent: a second call changes nothing (machine-id and host keys are kept).
    """
    tree = Tree(root, owner or 0)
    changed = []
    tree.ensure_dir("/root/.ssh", 0o700)
    for item in placed(tree, files_for(container, desired, bool(owner))):
        if apply_one(tree, item):
            changed.append(item.path)
    if ensure_machine_id(tree):
        changed.append("/etc/machine-id")
    changed += ensure_host_keys(tree, container.fqdn)
    if lock_root_password(tree):
        changed.append("/etc/shadow")
    return changed


def pending(root: Path, container: Container, desired: Desired,
            owner: int | None = None) -> list[str]:
    """The paths :func:`customize` would change, changing nothing (for `plan`)."""
    tree = Tree(root)
    out = [item.path for item in placed(tree, files_for(container, desired, bool(owner)))
           if not _is_done(tree, item)]
    if not _machine_id_ok(tree):
        out.append("/etc/machine-id")
    out += [f"/etc/ssh/ssh_host_{kind}_key" for kind in HOST_KEY_TYPES
            if not (tree.read(f"/etc/ssh/ssh_host_{kind}_key")
                    and tree.read(f"/etc/ssh/ssh_host_{kind}_key.pub"))]
    password = _root_password(tree)
    if password is not None and password != "*" and not password.startswith("!"):
        out.append("/etc/shadow")
    return out


def _is_done(tree: Tree, item: RootFile | RootLink) -> bool:
    if isinstance(item, RootLink):
        return tree.readlink(item.path) == item.target
    mode = tree.mode(item.path)
    return (tree.read(item.path) == item.content and mode is not None
            and mode & 0o7777 == item.mode)


def apply_one(tree: Tree, item: RootFile | RootLink) -> bool:
    if _is_done(tree, item):
        return False
    if isinstance(item, RootLink):
        if item.target is None:
            return tree.remove(item.path)
        tree.symlink(item.path, item.target)
        return True
    tree.write(item.path, item.content, item.mode)
    return True


def _machine_id_ok(tree: Tree) -> bool:
    current = (tree.read("/etc/machine-id") or b"").strip()
    return (len(current) == 32 and current != b"0" * 32
            and all(c in b"0123456789abcdef" for c in current))


def ensure_machine_id(tree: Tree) -> bool:
    if _machine_id_ok(tree):
        return False
    # systemd wants 128 random bits as lowercase hex, not a formatted UUID.
    tree.write("/etc/machine-id", (secrets.token_hex(16) + "\n").encode(), 0o444)
    return True


def ensure_host_keys(tree: Tree, fqdn: str) -> list[str]:
    """Make the host keys this container lacks (with the host's ssh-keygen, into a
    private directory first: it would follow links planted in the container's /etc)."""
    made = []
    for kind in HOST_KEY_TYPES:
        private = f"/etc/ssh/ssh_host_{kind}_key"
        if tree.read(private) and tree.read(private + ".pub"):
            continue
        with tempfile.TemporaryDirectory(prefix="fjord-hostkey-") as tmp:
            path = Path(tmp) / "key"
            run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{fqdn}",
                 "-f", str(path)], timeout=60, hint="install openssh-client on the host")
            tree.write(private, path.read_bytes(), 0o600)
            tree.write(private + ".pub", path.with_suffix(".pub").read_bytes(), 0o644)
        made += [private, private + ".pub"]
    return made


def _text(data: bytes) -> str:
    """A file of the container's as text: bytes that are not UTF-8 kept as they are
    (surrogate escapes), so that writing it back changes only what fjord changes."""
    return data.decode("utf-8", "surrogateescape")


def _root_password(tree: Tree) -> str | None:
    for line in _text(tree.read("/etc/shadow") or b"").splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            return fields[1]
    return None


def lock_root_password(tree: Tree) -> bool:
    """No default password: root's shadow entry must be locked (``*`` or ``!…``)."""
    shadow = tree.read("/etc/shadow")
    if shadow is None:
        return False
    lines = _text(shadow).splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            if fields[1] == "*" or fields[1].startswith("!"):
                return False
            fields[1] = "*"
            lines[i] = ":".join(fields)
            mode = tree.mode("/etc/shadow")
            tree.write("/etc/shadow", "".join(lines).encode("utf-8", "surrogateescape"),
                       (mode or 0o640) & 0o7777)
            return True
    return False

