"""Named network namespaces (visible to `ip netns`) and work inside them.

A namespace is created with util-linux `unshare --net=/run/netns/NAME`: a bind mount of
the namespace onto its file, exactly what `ip netns add` makes, but without turning
/run/netns into a shared mount point of its own (which `ip netns add` leaves behind on
the machine for good). Removing it unmounts and deletes the file.

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
from fjord.lab.names import NETNS_DIR, netns_path
from fjord.runner import run


def exists(name: str) -> bool:
    return netns_path(name).exists()


def is_mounted(name: str) -> bool:
    """True when /run/netns/NAME is a live namespace (not a leftover empty file)."""
    target = str(netns_path(name))
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == target for line in fh)


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
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        raise NamespaceExists(f"network namespace {name} already exists",
                              hint="it belongs to something else; pick another lab name") \
            from None
    os.close(fd)
    try:
        run(["unshare", f"--net={path}", "true"], timeout=10)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def remove(name: str) -> None:
    path = netns_path(name)
    try:
        syscalls.umount_detach(str(path))
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    path.unlink(missing_ok=True)


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
