"""Named network namespaces (visible to `ip netns`) and work inside them.

A namespace is created with util-linux `unshare --net=FILE`, a bind mount of the
namespace onto a file, as `ip netns add` makes, with two differences:

- the file is ``/run/fjord-lab/netns/NAME`` and ``/run/netns/NAME`` is a symlink to it
  (`ip netns`, `ip -n` and `nsenter --net=` follow it). `ip netns add`, run by anything
  on the machine, turns /run/netns into a recursive bind mount of itself: every mount
  under it then exists twice, the original hidden below the new /run/netns, where no
  path reaches it, and its file can never be unlinked (EBUSY) nor its namespace freed.
  Nothing is mounted under /run/netns here, so there is nothing to copy;
- /run/netns itself is left alone (not made a shared mount point of its own, which
  `ip netns add` leaves behind on the machine for good).

Removing a namespace unmounts and deletes both files. A namespace made by an older
fjord (mounted on /run/netns/NAME itself) is still removed; when a re-mount of
/run/netns hid a copy of it, removal says so instead of failing half-way.

`inside(name)` switches the calling *thread* into a namespace and back (network
namespaces are per thread), for netlink sockets and /proc/sys/net files that must be
opened there.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from fjord.errors import FjordError
from fjord.lab import syscalls
from fjord.lab.names import MOUNTS_DIR, NETNS_DIR, mount_path, netns_path
from fjord.runner import run


def exists(name: str) -> bool:
    """True when the name is taken (a namespace, or a leftover file or symlink)."""
    return netns_path(name).is_symlink() or netns_path(name).exists()


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return {line.split()[4] for line in fh}


def is_mounted(name: str) -> bool:
    """True when NAME is a live namespace (not a leftover empty file)."""
    points = _mount_points()
    return str(mount_path(name)) in points or str(netns_path(name)) in points


def inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


class NamespaceExists(FjordError):
    pass


def create(name: str) -> None:
    """Create the namespace; NamespaceExists (and nothing done) when the name is taken."""
    NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    MOUNTS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    if exists(name):
        raise _taken(name)
    target = mount_path(name)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:  # a leftover of a killed run: unused if not mounted
        if str(target) in _mount_points():
            raise _taken(name) from None
        fd = os.open(target, os.O_RDONLY)
    os.close(fd)
    try:
        run(["unshare", f"--net={target}", "true"], timeout=10)
        try:
            netns_path(name).symlink_to(target)
        except FileExistsError:
            raise _taken(name) from None
    except BaseException:
        _unmount(target)
        target.unlink(missing_ok=True)
        raise


def _taken(name: str) -> NamespaceExists:
    return NamespaceExists(f"network namespace {name} already exists",
                           hint="it belongs to something else; pick another lab name")


def _unmount(path: Path) -> None:
    """Detach every mount stacked on ``path`` that the path reaches."""
    for _ in range(16):
        try:
            syscalls.umount_detach(str(path))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):  # nothing (more) mounted there
                return
            raise


def remove(name: str) -> None:
    link = netns_path(name)
    if link.is_symlink():
        target = mount_path(name)
        _unmount(target)
        target.unlink(missing_ok=True)
        link.unlink(missing_ok=True)
        return
    _unmount(link)  # an older fjord's namespace, mounted on /run/netns/NAME itself
    try:
        link.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        raise FjordError(
            f"{link} cannot be removed: a copy of its mount is hidden under a later "
            f"re-mount of {NETNS_DIR} (`ip netns add` makes one)",
            hint="the namespace it holds stays until the machine reboots; namespaces made "
                 "by this fjord (symlinks to /run/fjord-lab/netns) are not affected") from None


@contextlib.contextmanager
def inside(name: str | Path) -> Iterator[None]:
    """Run the body with this thread in the network namespace ``name`` (or a path)."""
    target = os.open(name if isinstance(name, Path) else netns_path(name), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        syscalls.setns(target, syscalls.CLONE_NEWNET)
        try:
            yield
        finally:
            syscalls.setns(home, syscalls.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Set net.* sysctls of namespace ``name`` (files under /proc/sys/net are per netns)."""
    with inside(name):
        for key, value in values.items():
            if not key.startswith("net."):
                raise ValueError(f"{key} is not a per-namespace (net.*) setting")
            with open("/proc/sys/" + key.replace(".", "/"), "w", encoding="ascii") as fh:
                fh.write(value)
