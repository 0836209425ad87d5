"""Unprivileged containers: a range of 65536 host ids per container, and the idmapped
mount that lets the container's root use the shared image as its own.

An unprivileged container runs in a user namespace whose uid and gid 0..65535 are the
host's ``base``..``base+65535`` (libvirt's ``<idmap>``): its root is an ordinary,
unnamed user on the host, with no capability outside its own namespaces.

The ranges start at :data:`BASE` (1 000 000 000) and follow each other; each container
keeps its own in its ``container.json`` for its life, and a new container takes the
lowest range no existing container's record holds (see :func:`allocate`). Debian's
useradd hands out /etc/subuid and /etc/subgid ranges from 100 000 to 600 100 000
(SUB_UID_MIN/MAX in login.defs), so the two never meet; a range that overlaps a line of
/etc/subuid or /etc/subgid anyway (written by hand, or by another tool) is skipped.

The shared image stays owned by 0..65535, shared by every container. For a container
fjord mounts it a second time, *idmapped* with the container's user namespace
(open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount, Linux >= 5.12;
overlayfs takes an idmapped lower layer since 5.19): through that mount the image's
root-owned files are the container root's (``base``), and the overlay on it copies
files up with those owners. No byte of the image is copied or rewritten. The user
namespace the mount is idmapped with is a helper process's (``unshare --user``, its
maps written from here); the mount keeps the mapping after the helper is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from fjord.errors import FjordError

BASE = 1_000_000_000
SIZE = 65536
# Ranges up to 2^32 - 2 (the last id, 4294967295, is "no id"): 50 000 containers.
LIMIT = (1 << 32) - 2
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))

# Linux's generic syscall numbers (the same on x86_64 and arm64).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_O_CLOEXEC = 0o2000000
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def subid_ranges(files: Iterable[Path] = SUBID_FILES) -> list[tuple[int, int]]:
    """(start, count) of every line of /etc/subuid and /etc/subgid."""
    out = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                out.append((int(fields[1]), int(fields[2])))
    return out


def allocate(taken: Iterable[int], reserved: Iterable[tuple[int, int]] | None = None) -> int:
    """The lowest range start from :data:`BASE` that neither a container (``taken``: the
    starts of existing containers) nor a subordinate-id line (``reserved``) overlaps."""
    used = set(taken)
    busy = list(subid_ranges() if reserved is None else reserved)
    start = BASE
    while start + SIZE - 1 <= LIMIT:
        if start not in used and not any(s < start + SIZE and start < s + n for s, n in busy):
            return start
        start += SIZE
    raise FjordError("no free range of user ids left for an unprivileged container")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def userns_fd(base: int, count: int = SIZE) -> int:
    """A descriptor of a new user namespace that maps 0..count-1 to base..: a helper
    process's (``unshare --user``), whose maps are written from here."""
    own = os.readlink("/proc/self/ns/user")
    helper = subprocess.Popen(["unshare", "--user", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              close_fds=True)
    try:
        ns = f"/proc/{helper.pid}/ns/user"
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                if os.readlink(ns) != own:
                    break
            if helper.poll() is not None or time.monotonic() > deadline:
                raise FjordError("cannot make a user namespace (unshare --user failed)",
                                 hint="is user.max_user_namespaces 0?")
            time.sleep(0.002)
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{kind}", "w") as fh:
                fh.write(f"0 {base} {count}\n")
        return os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.kill()
        helper.wait()


def mount_idmapped(source: Path, target: Path, base: int) -> None:
    """Bind-mount ``source`` at ``target`` with ids 0..65535 shown as base..base+65535."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    fd = _check(libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(str(source)),
                             _OPEN_TREE_CLONE | _O_CLOEXEC | _AT_RECURSIVE),
                f"open_tree {source}")
    try:
        ns = userns_fd(base)
        try:
            attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP, userns_fd=ns)
            try:
                _check(libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                                    ctypes.byref(attr), ctypes.sizeof(attr)),
                       f"mount_setattr {source}")
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
                    raise FjordError(f"cannot idmap a mount of {source}: {exc.strerror}",
                                     hint="unprivileged containers need Linux >= 5.19 and "
                                     "a filesystem with idmapped mounts (ext4, xfs, btrfs, "
                                     "tmpfs); or set `privileged: true`") from exc
                raise
        finally:
            os.close(ns)
        _check(libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(str(target)),
                            _MOVE_MOUNT_F_EMPTY_PATH), f"move_mount to {target}")
    finally:
        os.close(fd)
