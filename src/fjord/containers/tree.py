"""Writing into a container's root filesystem from the host, safely.

A container's root is a tree its own root user controls: after the first boot any
path in it may have become a symbolic link to somewhere on the host. Every operation
here therefore walks the path one component at a time with O_NOFOLLOW, relative to
directory descriptors, and replaces files by renaming (which replaces a link instead
of writing through it). Nothing here runs a program from the tree.

Reading is as careful (:meth:`Tree.read`): the tree's root user may have put a FIFO
where fjord expects a file (an open for reading would wait for a writer forever), a
device, or a file of gigabytes. Only a regular file of at most :data:`MAX_READ` bytes
is read; anything else is refused (:class:`NotReadable`), and the plan reports that
container as unreadable instead of hanging or crashing on it. Bytes are returned as
they are: fjord compares them, never decodes them strictly.

Also the two whole-tree helpers fjord needs on its own directories: the disk space a
tree takes, and removing one without ever crossing into a mount inside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from fjord.errors import FjordError
from fjord.runner import run

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (and a
# device's open does not wait for a carrier); the file type is checked before reading.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
# The largest file fjord reads from a container's root: every file it manages or looks
# at (/etc/hosts, /etc/shadow, keys, configuration) is a few KiB.
MAX_READ = 1 << 20


class Refused(FjordError):
    """Something in a container's root that fjord will not read or write through."""


class UnsafePath(Refused):
    def __init__(self, root: Path, rel: str) -> None:
        super().__init__(f"{root}/{rel.lstrip('/')}: a component is a symbolic link or not a "
                         "directory; fjord does not write through links in a container's root",
                         hint="inspect the container's files; remove the link if it is wrong")


class NotReadable(Refused):
    """A path that is not a regular file fjord may read (a FIFO, a device, too large)."""

    def __init__(self, root: Path, rel: str, why: str) -> None:
        self.rel = rel
        super().__init__(f"{root}/{rel.lstrip('/')} is {why}; fjord reads only regular files "
                         f"of at most {MAX_READ >> 20} MiB in a container's root",
                         hint="inspect the container's files; remove or replace it, then "
                              "run `fjord apply` again")


def file_type(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return what
    return "an unknown kind of file"


class Tree:
    """A root filesystem directory on the host (``/`` inside means ``path``). ``owner``:
    the host id of the tree's root user (an unprivileged container's first id; 0 for a
    privileged one), which owns what is made here."""

    def __init__(self, path: Path, owner: int = 0) -> None:
        self.path = Path(path)
        self.owner = owner

    @staticmethod
    def _parts(rel: str) -> tuple[list[str], str]:
        parts = [p for p in PurePosixPath("/", rel).parts[1:] if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"not a path inside the tree: {rel!r}")
        return parts[:-1], parts[-1]

    @contextlib.contextmanager
    def _dir(self, dirs: list[str], rel: str, create: bool,
             mode: int = 0o755) -> Iterator[int | None]:
        """A descriptor of the directory ``dirs`` (None when absent and not ``create``)."""
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            for name in dirs:
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        fd = -1
                        yield None
                        return
                    os.mkdir(name, mode, dir_fd=fd)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    if self.owner and os.geteuid() == 0:
                        os.fchown(nfd, self.owner, self.owner)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePath(self.path, rel) from exc
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def read(self, rel: str, limit: int = MAX_READ) -> bytes | None:
        """The content of a regular file; None when absent (or a link: not ours to read;
        writing replaces it). Anything else (a FIFO, a device, a socket, a directory, a
        file over ``limit`` bytes) raises :class:`NotReadable`, without ever blocking or
        reading more than ``limit`` + 1 bytes."""
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=False) as dfd:
            if dfd is None:
                return None
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return None
            if not stat.S_ISREG(st.st_mode):  # checked before open: a device is not opened
                raise NotReadable(self.path, rel,
                                  f"{file_type(st.st_mode)}, not a regular file")
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return None
                if exc.errno == errno.ENXIO:  # a socket swapped in after the stat
                    raise NotReadable(self.path, rel, "a socket, not a regular file") from exc
                raise
            try:
                st = os.fstat(fd)  # what was opened, not what was looked at before
                if not stat.S_ISREG(st.st_mode):
                    raise NotReadable(self.path, rel,
                                      f"{file_type(st.st_mode)}, not a regular file")
                if st.st_size > limit:
                    raise NotReadable(self.path, rel, f"too large ({_size(st.st_size)})")
                chunks: list[bytes] = []
                left = limit + 1
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 16))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                if left <= 0:
                    raise NotReadable(self.path, rel, "too large (it grew while read)")
                return b"".join(chunks)
            finally:
                os.close(fd)

    def mode(self, rel: str) -> int | None:
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=False) as dfd:
            if dfd is None:
                return None
            try:
                return os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return None

    def readlink(self, rel: str) -> str | None:
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=False) as dfd:
            if dfd is None:
                return None
            try:
                return os.readlink(name, dir_fd=dfd)
            except (FileNotFoundError, OSError):
                return None

    def write(self, rel: str, data: bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
        """Replace ``rel`` atomically (missing directories made with ``dir_mode``). A new
        file is root's; a replaced one keeps its owner and group (/etc/shadow's group)."""
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=True, mode=dir_mode) as dfd:
            assert dfd is not None
            try:
                old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                owner = (old.st_uid, old.st_gid)
            except FileNotFoundError:
                owner = (self.owner, self.owner)
            tmp = f".{name}.fjord-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                    if os.geteuid() == 0:
                        os.fchown(fh.fileno(), *owner)
                    os.fchmod(fh.fileno(), mode)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                raise

    def ensure_dir(self, rel: str, mode: int) -> None:
        """A root-owned directory with exactly ``mode`` (made when missing)."""
        dirs, name = self._parts(rel)
        with self._dir([*dirs, name], rel, create=True, mode=mode) as dfd:
            assert dfd is not None
            if os.geteuid() == 0:
                os.fchown(dfd, self.owner, self.owner)
            os.fchmod(dfd, mode)

    def symlink(self, rel: str, target: str) -> None:
        """Make ``rel`` a symbolic link to ``target`` (replacing what is there)."""
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=True) as dfd:
            assert dfd is not None
            tmp = f".{name}.fjord-{secrets.token_hex(4)}"
            os.symlink(target, tmp, dir_fd=dfd)
            if self.owner and os.geteuid() == 0:
                os.chown(tmp, self.owner, self.owner, dir_fd=dfd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)

    def remove(self, rel: str) -> bool:
        """Remove a file or link; True when something was removed."""
        dirs, name = self._parts(rel)
        with self._dir(dirs, rel, create=False) as dfd:
            if dfd is None:
                return False
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                return False
            return True


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.1f} GiB"


def tree_size(path: Path) -> int:
    """Bytes allocated on disk by a tree (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def remove_tree(path: Path) -> None:
    """Remove a tree fjord made, never descending into a mount point below it (a mount
    left inside would otherwise have its contents deleted)."""
    if not os.path.lexists(path):
        return
    run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=600)
    if os.path.lexists(path):
        raise FjordError(f"could not remove {path} completely (a mount inside it?)",
                         hint=f"check `findmnt -R {path}`, unmount, then remove it")
