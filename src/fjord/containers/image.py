"""Debian root filesystem images: built once per set of inputs with mmdebstrap, cached.

An image is ``<state>/images/<key>/`` holding ``rootfs/`` and ``meta.json``. The key
is a hash of everything that decides the image's content (suite, APT sources,
architecture, packages, generated locales and fjord's build recipe), so the same
inputs find the same image and any change makes a new one; an image is never changed
in place (overlay containers use it as their read-only lower layer).

A build happens in ``.building-<key>-<pid>/`` next to the images and is renamed into
place only when complete: a failed, interrupted or killed build never leaves an image
that looks usable. A per-key lock makes a second build of the same key wait for the
first and then use its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fjord.containers.progress import BuildProgress
from fjord.containers.tree import remove_tree, tree_size
from fjord.environment import current
from fjord.errors import CommandError, FjordError
from fjord.runner import alive, run, sigterm_raises, stream

if TYPE_CHECKING:
    from fjord.config.desired import Container, Desired

log = logging.getLogger("fjord.image")

# Bump whenever the recipe below changes what an image contains: every key changes, so
# existing containers keep their image and new ones get a fresh build.
RECIPE = 2

# What every container needs to boot and be reached (DESIGN fact 6), plus procps:
# ifupdown sets accept_ra/autoconf through sysctl(8), and without it silently does not.
BASE_PACKAGES = (
    "ca-certificates", "ifupdown", "iproute2", "iputils-ping", "locales",
    "openssh-server", "procps", "systemd-sysv",
)
# From trixie on, the kernel defaults systemd used to ship (50-default.conf: among them
# net.ipv4.ping_group_range, which lets users ping; trixie's ping has no file capability)
# are a package of their own that systemd only recommends.
SUITE_PACKAGES = {"trixie": ("linux-sysctl-defaults",), "sid": ("linux-sysctl-defaults",),
                  "unstable": ("linux-sysctl-defaults",)}


def base_packages(suite: str) -> tuple[str, ...]:
    """What every image of ``suite`` holds, whatever the configuration adds."""
    return BASE_PACKAGES + SUITE_PACKAGES.get(suite, ())

# Documentation, manual pages and translations are a quarter of a minbase image and
# nobody reads them in a container. They are deleted after the build, and dpkg is told
# to leave them out of packages installed later. (Not with mmdebstrap's --dpkgopt: then
# mmdebstrap pipes every essential package through its Python tar filter, and the
# build takes 25 s longer, measured.) Copyright files stay.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
DPKG_EXCLUDES_FILE = "etc/dpkg/dpkg.cfg.d/fjord-excludes"

# Locales every glibc has built in: nothing to generate.
BUILTIN_LOCALES = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8"})

# Suites without -updates and -security archives.
_NO_SECURITY = frozenset({"sid", "unstable", "experimental", "rc-buggy"})

BUILD_TIMEOUT = 1800.0
BUILDING = ".building-"
LOCKS = ".locks"
META = "meta.json"

_MIRROR_FAULTS = re.compile(
    r"(Failed to fetch|Could not resolve|Temporary failure resolving|Unable to connect|"
    r"Could not connect|Connection (refused|failed|timed out)|No route to host|"
    r"Network is unreachable|does not have a Release file|404\s+Not Found)",
    re.IGNORECASE,
)


def images_dir() -> Path:
    """``<state>/images``; the environment may move it (``$FJORD_IMAGES_DIR``: labs
    share one cache, and an image built on the machine serves every lab: the key does
    not depend on the path)."""
    return current().images_dir


@functools.cache
def host_architecture() -> str:
    """The Debian architecture images are built for (the host's: containers share its kernel)."""
    return run(["dpkg", "--print-architecture"], timeout=10).stdout.strip()


def puppet_packages(suite: str) -> tuple[str, ...]:
    """The Puppet agent's package: ``puppet-agent`` since bookworm (where ``puppet`` is
    only a transitional package depending on it), ``puppet`` before."""
    if suite in {"stretch", "buster", "bullseye"}:
        return ("puppet",)
    return ("puppet-agent",)


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides an image's content; equal specs share one image."""

    suite: str
    sources: tuple[str, ...]       # one-line-style APT sources ("deb URI SUITE COMPONENTS")
    architecture: str
    packages: tuple[str, ...]      # sorted, the base packages included
    locales: tuple[str, ...] = ()  # generated with locale-gen, besides the built-in C.UTF-8

    def inputs(self) -> dict[str, Any]:
        return {
            "recipe": RECIPE,
            "suite": self.suite,
            "sources": list(self.sources),
            "architecture": self.architecture,
            "packages": list(self.packages),
            "locales": list(self.locales),
        }

    @functools.cached_property
    def key(self) -> str:
        canonical = json.dumps(self.inputs(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return f"{self.suite}-{self.architecture}-{digest}"

    @property
    def mirror(self) -> str:
        return self.sources[0].split()[1]


def make_spec(*, suite: str, mirror: str, packages: Iterable[str] = (),
              locales: Iterable[str] = (), architecture: str | None = None,
              components: Iterable[str] = ("main",), updates: bool = True,
              security: bool = True) -> ImageSpec:
    """An ImageSpec in canonical form (sorted, de-duplicated, base packages added)."""
    comps = " ".join(components)
    mirror = mirror.rstrip("/")
    sources = [f"deb {mirror} {suite} {comps}"]
    if suite not in _NO_SECURITY:
        if updates:
            sources.append(f"deb {mirror} {suite}-updates {comps}")
        if security:
            sources.append(f"deb {security_mirror(mirror)} {suite}-security {comps}")
    return ImageSpec(
        suite=suite,
        sources=tuple(sources),
        architecture=architecture or host_architecture(),
        packages=tuple(sorted(set(base_packages(suite)) | set(packages))),
        locales=tuple(sorted(set(locales) - BUILTIN_LOCALES)),
    )


def security_mirror(mirror: str) -> str:
    """Debian's security archive next to ``mirror`` when it is deb.debian.org, else the
    canonical one (ordinary mirrors do not carry it)."""
    if re.match(r"^https?://deb\.debian\.org/debian$", mirror):
        return mirror + "-security"
    return "http://security.debian.org/debian-security"


def spec_for(container: Container, desired: Desired,
             architecture: str | None = None) -> ImageSpec:
    """The image a container is made from."""
    apt = desired.host.apt
    packages = list(container.packages)
    if container.puppet is not None:
        packages += puppet_packages(container.suite)
    return make_spec(
        suite=container.suite, mirror=apt.mirror, packages=packages,
        locales=[container.locale], architecture=architecture,
        components=apt.components, updates=apt.updates, security=apt.security,
    )


@dataclass(frozen=True)
class Image:
    """A complete image in the cache."""

    key: str
    path: Path
    meta: dict[str, Any] = field(compare=False)

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))

    @property
    def created(self) -> float:
        return float(self.meta.get("created", 0))

    @property
    def inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = self.meta.get("inputs", {})
        return inputs


ProgressCallback = Callable[[BuildProgress], None]


class ImageCache:
    """The images under one directory (default: ``<state>/images``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else images_dir()

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> Image | None:
        """The cached image, or None. Cheap: reads one small file, never walks the tree."""
        meta_path = self.path(key) / META
        try:
            meta = json.loads(meta_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("%s is corrupt; the image will be rebuilt", meta_path)
            return None
        return Image(key, self.path(key), meta)

    def ensure(self, spec: ImageSpec, progress: ProgressCallback | None = None,
               **build_options: Any) -> tuple[Image, bool]:
        """The image for ``spec``, building it when missing; True when it was built now."""
        found = self.get(spec.key)
        if found is not None:
            return found, False
        return self.build(spec, progress, **build_options), True

    def build(self, spec: ImageSpec, progress: ProgressCallback | None = None, *,
              timeout: float = BUILD_TIMEOUT,
              on_start: Callable[[Any], None] | None = None) -> Image:
        """Build the image for ``spec`` (or take the one a concurrent build just made)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(spec.key):
            found = self.get(spec.key)
            if found is not None:
                return found
            if self.path(spec.key).exists():
                # No meta.json: not an image fjord finished; set it aside, never use it.
                remove_tree(self.path(spec.key))
            self.clean_stale()
            return self._build_locked(spec, progress, timeout, on_start)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        locks = self.root / LOCKS
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another build of image %s is running; waiting for it", key)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _build_locked(self, spec: ImageSpec, progress: ProgressCallback | None,
                      timeout: float, on_start: Callable[[Any], None] | None) -> Image:
        work = self.root / f"{BUILDING}{spec.key}-{os.getpid()}"
        started = time.time()
        try:
            with sigterm_raises():
                work.mkdir()
                rootfs = work / "rootfs"
                version = _mmdebstrap(spec, rootfs, progress, timeout, on_start)
                try:
                    finish_rootfs(rootfs, spec)
                    meta = {
                        "key": spec.key,
                        "inputs": spec.inputs(),
                        "created": started,
                        "seconds": round(time.time() - started, 3),
                        "size": tree_size(rootfs),
                        "mmdebstrap": version,
                    }
                    (work / META).write_text(json.dumps(meta, indent=2, sort_keys=True)
                                             + "\n")
                    os.rename(work, self.path(spec.key))
                except OSError as exc:  # a full disk, typically
                    raise FjordError(
                        f"building image {spec.key} failed while finishing it: "
                        f"{exc.strerror or exc} ({exc.filename or self.root})",
                        hint=f"free space under {self.root}; nothing was cached") from exc
        except BaseException:
            remove_tree(work)
            raise
        log.info("built image %s in %.1f s", spec.key, time.time() - started)
        image = self.get(spec.key)
        assert image is not None
        return image

    def images(self) -> list[Image]:
        images = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if not entry.name.startswith("."):
                    image = self.get(entry.name)
                    if image is not None:
                        images.append(image)
        return images

    def in_progress(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(BUILDING))

    def clean_stale(self) -> list[Path]:
        """Remove the work directories of builds whose process is gone (killed -9, power
        loss); those of running builds stay."""
        removed = []
        for work in self.in_progress():
            pid = _building_pid(work.name)
            if pid is not None and alive(pid):
                continue
            log.info("removing %s, left by an interrupted build", work)
            remove_tree(work)
            removed.append(work)
        return removed

    def remove(self, image: Image) -> None:
        """Delete an image: renamed away first, so it stops being an image at once."""
        trash = self.root / f"{BUILDING}{image.key}-removing-{os.getpid()}"
        with self._lock(image.key):
            os.rename(image.path, trash)
        remove_tree(trash)


def _building_pid(name: str) -> int | None:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def mmdebstrap_argv(spec: ImageSpec, target: Path) -> list[str]:
    argv = [
        # A private mount namespace: the /proc, /sys and /dev mounts mmdebstrap makes in
        # the chroot vanish with it, even when it is killed; none reaches the host's.
        "unshare", "--mount", "--propagation", "private", "--",
        "mmdebstrap", "--verbose", "--mode=root", "--variant=minbase", "--format=directory",
        f"--architectures={spec.architecture}",
        f"--include={','.join(spec.packages)}",
    ]
    argv += [spec.suite, str(target)]
    argv += list(spec.sources)
    return argv


def mmdebstrap_version() -> str:
    out = run(["mmdebstrap", "--version"], timeout=30, hint="apt-get install mmdebstrap").stdout
    return out.strip().rsplit(" ", 1)[-1]


def _mmdebstrap(spec: ImageSpec, target: Path, progress: ProgressCallback | None,
                timeout: float, on_start: Callable[[Any], None] | None) -> str:
    version = mmdebstrap_version()
    state = BuildProgress()

    def on_line(line: str) -> None:
        if state.feed(line) and progress is not None:
            progress(state)

    try:
        stream(mmdebstrap_argv(spec, target), on_line, timeout=timeout,
               env={"LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
               on_start=on_start)
    except CommandError as exc:
        raise build_error(spec, exc) from exc
    return version


def build_error(spec: ImageSpec, exc: CommandError) -> FjordError:
    """Say what failed in the operator's terms: an unreachable mirror, or the build."""
    lines = exc.stderr.splitlines()
    fault = next((line.strip() for line in lines if _MIRROR_FAULTS.search(line)), None)
    if exc.returncode is None:
        return FjordError(f"building image {spec.key} took too long and was stopped",
                          hint="a slow mirror? try again, or set host.apt.mirror closer")
    if fault is not None:
        return FjordError(
            f"cannot download from the Debian mirror {spec.mirror} while building image "
            f"{spec.key}: {fault}",
            hint="check host.apt.mirror and the host's network and DNS; nothing was cached",
        )
    last = "\n".join("  " + line for line in lines[-15:])
    how = (f"was killed by signal {-exc.returncode}" if exc.returncode < 0
           else f"exited with status {exc.returncode}")
    return FjordError(f"building image {spec.key} failed (mmdebstrap {how}):\n{last}",
                      hint="rerun with -v to see the command; nothing was cached")


def finish_rootfs(rootfs: Path, spec: ImageSpec) -> None:
    """Make the fresh tree a neutral image: nothing in it identifies a container or the
    build host, because every container shares it."""
    # Host keys made by openssh-server's postinst would be the same in every container.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # mmdebstrap leaves the build host's name and resolver; customisation writes both.
    (rootfs / "etc/hostname").write_text("localhost\n")
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
    # Empty: systemd treats the first boot as such unless customisation writes an id.
    (rootfs / "etc/machine-id").write_text("")
    prune_documentation(rootfs)
    if spec.locales:
        generate_locales(rootfs, spec.locales)


def prune_documentation(rootfs: Path) -> None:
    """What dpkg's path-exclude rules (DPKG_EXCLUDES) would have left out, removed; and
    the rules installed for later packages."""
    for rule in DPKG_EXCLUDES:
        kind, _, pattern = rule.partition("=")
        if kind != "path-exclude":
            continue
        top = rootfs / pattern.strip("/").removesuffix("/*")
        keep = [r.partition("=")[2].strip("/") for r in DPKG_EXCLUDES
                if r.startswith(f"path-include=/{top.relative_to(rootfs)}/")]
        _prune(rootfs, top, keep)
    (rootfs / DPKG_EXCLUDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (rootfs / DPKG_EXCLUDES_FILE).write_text(
        "# fjord: no documentation in containers (see fjord/containers/image.py)\n"
        + "".join(f"{rule}\n" for rule in DPKG_EXCLUDES))


def _prune(rootfs: Path, top: Path, keep: list[str]) -> None:
    if top.is_symlink() or not top.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            path = here / name
            rel = str(path.relative_to(rootfs))
            if not any(fnmatch.fnmatchcase(rel, pattern) for pattern in keep):
                path.unlink()
        if here != top:
            with contextlib.suppress(OSError):  # not empty: it holds something kept
                here.rmdir()


def generate_locales(rootfs: Path, locales: Iterable[str]) -> None:
    """Compile locales into the image with its own locale-gen (in a chroot, at build
    time, like the packages' own maintainer scripts)."""
    supported = {}
    for line in (rootfs / "usr/share/i18n/SUPPORTED").read_text().splitlines():
        name, _, charset = line.partition(" ")
        supported[name] = charset
    lines = []
    for locale in locales:
        if locale not in supported:
            raise FjordError(f"locale {locale} is not one Debian can generate",
                             hint="see /usr/share/i18n/SUPPORTED for the names (en_US.UTF-8)")
        lines.append(f"{locale} {supported[locale]}\n")
    (rootfs / "etc/locale.gen").write_text("".join(lines))
    run(["chroot", str(rootfs), "/usr/sbin/locale-gen"], timeout=600)


def used_images(container_records: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Image key -> names of containers made from it."""
    users: dict[str, list[str]] = {}
    for record in container_records:
        key = record.get("image")
        if isinstance(key, str):
            users.setdefault(key, []).append(str(record.get("name")))
    return users


def prune(cache: ImageCache, keep: Iterable[str], *, dry_run: bool = False) -> list[Image]:
    """Remove the images whose key is not in ``keep`` (those containers use or the
    configuration wants), and leftovers of interrupted builds."""
    keep = set(keep)
    doomed = [image for image in cache.images() if image.key not in keep]
    if not dry_run:
        cache.clean_stale()
        for image in doomed:
            cache.remove(image)
    return doomed

