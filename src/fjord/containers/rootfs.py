"""A container's root filesystem: an overlay on its image, or a full copy of it.

Layout, under ``<state>/containers/<name>/``:

- ``container.json``: the mode and the image key the container was made from, and the
  addresses it was customised with. The image stays the container's for its life: an
  overlay's lower layer must never change under its upper one, so a new image means a
  new container. The addresses are a second copy of its entry in allocations.json, so
  that a lost allocations file is rebuilt from what exists; a corrupt record is in turn
  rebuilt from what exists (see :func:`read_record`).
- ``overlay``: ``upper/`` (everything the container changed: customisation, logs,
  installed packages) and ``work/`` (overlayfs' scratch space), mounted with the
  image's ``rootfs/`` as the read-only lower layer at ``rootfs/``.
- ``copy``: ``rootfs/`` is an independent full copy (``cp -a --reflink=auto``: shared
  blocks on btrfs/XFS, a real copy on ext4).

The overlay must be mounted whenever libvirt starts the container, including at boot
(libvirt's autostart) and after a `virsh start` by hand. fjord does that with a libvirt
hook (:mod:`fjord.containers.hook`): libvirt runs it before every start of every LXC
domain, in its own mount namespace, so the mount is there exactly when and where the
container needs it, with no fstab line or boot ordering to maintain.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fjord.containers.idmap import allocate, mount_idmapped
from fjord.containers.image import Image
from fjord.containers.tree import remove_tree, tree_size
from fjord.errors import FjordError
from fjord.runner import run
from fjord.state import atomic_write
from fjord.state.records import RECORD, containers_dir

Mode = Literal["overlay", "copy"]
# Characters overlayfs' option parser treats specially; fjord's own paths never have them.
_UNSAFE_OPTION = re.compile(r"[,:\\\s=]")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """What ``container.json`` says about a container's root."""

    name: str
    mode: Mode
    image: str        # the image key ("" when a rebuilt record could not tell)
    lower: str        # the image's rootfs directory ("" likewise)
    created: float
    addresses: Mapping[str, str] | None = None   # as in allocations.json
    # Unprivileged: the first host id of the container's range (its root); None: privileged.
    idmap: int | None = None
    # Not stored: why this record was rebuilt in memory (its file was corrupt), or None.
    rebuilt: str | None = field(default=None, compare=False)

    def stored(self) -> dict[str, Any]:
        data = asdict(self)
        del data["rebuilt"]
        if self.idmap is None:
            del data["idmap"]
        if self.addresses is None:
            del data["addresses"]
        else:
            data["addresses"] = dict(self.addresses)
        return data


@dataclass(frozen=True)
class RootfsLayout:
    name: str
    base: Path

    @classmethod
    def of(cls, name: str, base: Path | None = None) -> RootfsLayout:
        return cls(name, (base if base is not None else containers_dir()) / name)

    @property
    def record(self) -> Path:
        return self.base / RECORD

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def rootfs(self) -> Path:
        return self.base / "rootfs"

    @property
    def lower(self) -> Path:
        """Where an unprivileged overlay's image is mounted idmapped (its lower layer)."""
        return self.base / "lower"


def read_record(layout: RootfsLayout) -> Record | None:
    """The container's record; None when the container has no root at all.

    A corrupt record (or one lost while the root is still there) is rebuilt in memory
    from what exists, with ``rebuilt`` saying how; `fjord apply` writes it back (the bad
    file is kept as ``container.json.corrupt``). Nothing is ever deleted because of it.
    """
    try:
        raw = layout.record.read_bytes()
    except FileNotFoundError:
        if layout.upper.is_dir() or _has_root(layout.rootfs):
            return _rebuild(layout, "container.json is missing")
        return None
    try:
        return _parse(raw)
    except (ValueError, KeyError, TypeError) as exc:
        return _rebuild(layout, f"container.json is corrupt ({exc})")


def _parse(raw: bytes) -> Record:
    data = json.loads(raw)
    mode = data["mode"]
    if mode not in ("overlay", "copy"):
        raise ValueError(f"unknown mode {mode!r}")
    addresses = data.get("addresses")
    if addresses is not None and not (
            isinstance(addresses, dict) and all(isinstance(v, str) for v in addresses.values())):
        raise ValueError("addresses is not an object of strings")
    idmap = data.get("idmap")
    if idmap is not None and (not isinstance(idmap, int) or isinstance(idmap, bool)
                              or idmap < 1 or idmap > (1 << 32) - 2 - 65535):
        raise ValueError(f"idmap is not a first host id: {idmap!r}")
    return Record(name=str(data["name"]), mode=mode, image=str(data["image"]),
                  lower=str(data["lower"]), created=float(data["created"]),
                  addresses=addresses, idmap=idmap)


def _has_root(path: Path) -> bool:
    return (path / "sbin").exists() or (path / "usr/sbin").exists()


def _rebuild(layout: RootfsLayout, why: str) -> Record:
    """A record from what is on disk: ``upper/`` makes an overlay (its image from the
    mounted overlay's lower layer when mounted, else unknown), a root without it a copy."""
    idmap = _owner_base(layout.upper if layout.upper.is_dir() else layout.rootfs)
    if layout.upper.is_dir():
        lower = mounted_lower(layout.rootfs) or ""
        if lower == str(layout.lower):  # the idmapped mount: its source is not shown
            lower = ""
        mode: Mode = "overlay"
        how = f"an overlay on {lower}" if lower else "an overlay (image unknown: not mounted)"
    elif _has_root(layout.rootfs):
        lower, mode, how = "", "copy", "a full copy"
    else:
        raise FjordError(f"{layout.record}: {why}, and {layout.base} holds no root to "
                         "rebuild it from", hint="inspect the directory; `fjord container "
                         f"destroy {layout.name}` removes what is left")
    image = Path(lower).parent.name if lower else ""
    try:
        created = layout.base.stat().st_mtime
    except OSError:
        created = time.time()
    log.warning("%s: %s; rebuilt from what exists: %s", layout.record, why, how)
    return Record(name=layout.name, mode=mode, image=image, lower=lower, created=created,
                  idmap=idmap, rebuilt=f"{why}; rebuilt from what exists: {how}")


def _owner_base(root: Path) -> int | None:
    """The range an unprivileged root was made for, from its top directory's owner."""
    try:
        uid = root.stat().st_uid
    except OSError:
        return None
    return uid if uid >= 65536 else None


def mounted_lower(path: Path) -> str | None:
    """The lower directory of the overlay mounted at ``path``, if one is."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if _unescape(fields[4]) != target or " - overlay " not in line:
                continue
            options = line.partition(" - ")[2].split()[2]
            for option in options.split(","):
                if option.startswith("lowerdir="):
                    return _unescape(option.removeprefix("lowerdir=")).split(":")[0]
    return None


def write_record(layout: RootfsLayout, record: Record) -> None:
    """Write the record atomically; a corrupt one is kept as ``container.json.corrupt``."""
    try:
        _parse(layout.record.read_bytes())
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):
        os.replace(layout.record, layout.record.with_name(RECORD + ".corrupt"))
    atomic_write(layout.record, (json.dumps(record.stored(), indent=2, sort_keys=True)
                                 + "\n").encode(), 0o644)


def save_addresses(layout: RootfsLayout, addresses: Mapping[str, str]) -> bool:
    """Keep the container's addresses in its record; True when it changed."""
    record = read_record(layout)
    if record is None or (record.addresses == dict(addresses) and record.rebuilt is None):
        return False
    write_record(layout, replace(record, addresses=dict(addresses), rebuilt=None))
    return True


def all_records(base: Path | None = None) -> list[Record]:
    root = base if base is not None else containers_dir()
    records = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name == TRASH:
                continue
            try:
                record = read_record(RootfsLayout(entry.name, entry))
            except PermissionError:
                # not root (`fjord plan` of a file): a container's directory is 0700;
                # what cannot be read is left out, as the plan's other unreadable state
                continue
            if record is not None:
                records.append(record)
    return records


def overlay_options(layout: RootfsLayout, lower: Path) -> str:
    for path in (lower, layout.upper, layout.work):
        if _UNSAFE_OPTION.search(str(path)):
            raise FjordError(f"{path}: overlayfs cannot take this path (',', ':', '=', '\\' "
                             "or blanks in it)", hint="use a plain FJORD_STATE_DIR")
    return f"lowerdir={lower},upperdir={layout.upper},workdir={layout.work}"


def mounted(path: Path) -> bool:
    """Is ``path`` a mount point in this process's mount namespace?"""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            if _unescape(line.split()[4]) == target:
                return True
    return False


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def prepare(name: str, image: Image, mode: Mode, base: Path | None = None,
            privileged: bool = True) -> RootfsLayout:
    """Make the container's root from ``image`` (idempotent); mount it for overlays.
    Unprivileged (``privileged`` False): a range of ids of its own, allocated here and
    kept in its record, owns the root (see :mod:`fjord.containers.idmap`).

    Refuses to put a container on another image or mode than it was made with.
    """
    layout = RootfsLayout.of(name, base)
    record = read_record(layout)
    if record is not None and record.rebuilt is not None:
        record = adopt(layout, record, image)
    if record is not None:
        if record.image != image.key or record.mode != mode:
            raise FjordError(
                f"container {name} was made as {record.mode} on image {record.image}; "
                f"it cannot become {mode} on {image.key} in place",
                hint=f"destroy and recreate it (`fjord container destroy {name}`) to move it")
        if mode == "overlay":
            mount(layout, Path(record.lower), record.idmap)
        return layout
    idmap_base = None if privileged else allocate_idmap(skip=name)
    layout.base.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.base, 0o700)  # the upper layer holds the container's private keys
    if idmap_base is not None:
        # libvirt pivots into rootfs/ from inside the user namespace: its root (and only
        # it, as the group) may pass through, not list
        os.chown(layout.base, 0, idmap_base)
        os.chmod(layout.base, 0o710)
    if mode == "overlay":
        _prepare_overlay(layout, image, idmap_base)
    else:
        _prepare_copy(layout, image, idmap_base)
    write_record(layout, Record(name=name, mode=mode, image=image.key,
                                lower=str(image.rootfs), created=time.time(),
                                idmap=idmap_base))
    return layout


def make_unprivileged(layout: RootfsLayout) -> int:
    """Give a privileged container's files to a range of its own (it must be stopped):
    an overlay's upper layer (its image is mounted idmapped from now on) or a copy's
    whole root; its record then holds the range. Returns the range's first id."""
    record = read_record(layout)
    if record is None or record.idmap is not None:
        raise FjordError(f"container {layout.name} is not a privileged container")
    unmount(layout)
    n = allocate_idmap(skip=layout.name)
    shift_tree(layout.upper if record.mode == "overlay" else layout.rootfs, n)
    if record.mode == "overlay":
        layout.lower.mkdir(exist_ok=True)
    os.chown(layout.base, 0, n)
    os.chmod(layout.base, 0o710)
    write_record(layout, replace(record, idmap=n, rebuilt=None))
    if record.mode == "overlay":
        mount(layout, Path(record.lower), n)
    return n


def allocate_idmap(skip: str = "", base: Path | None = None) -> int:
    """A range no existing container holds (their records: a destroyed container's range
    is free once its directory is gone)."""
    taken = [r.idmap for r in all_records(base) if r.idmap is not None and r.name != skip]
    return allocate(taken)


def adopt(layout: RootfsLayout, record: Record, image: Image) -> Record:
    """Write back a rebuilt record; where it could not tell the image, the one the file
    asks for (which must exist: an overlay's upper layer is only whole on its image)."""
    if not record.image:
        record = replace(record, image=image.key, lower=str(image.rootfs))
    record = replace(record, rebuilt=None)
    write_record(layout, record)
    return record


def _prepare_overlay(layout: RootfsLayout, image: Image, idmap: int | None = None) -> None:
    for d in (layout.upper, layout.work, layout.rootfs):
        d.mkdir(exist_ok=True)
    # The merged root's top directory takes the upper's owner and mode: the image's.
    st = image.rootfs.stat()
    os.chmod(layout.upper, st.st_mode & 0o7777)
    if idmap is not None:
        layout.lower.mkdir(exist_ok=True)
        os.chown(layout.upper, idmap + st.st_uid, idmap + st.st_gid)
    mount(layout, image.rootfs, idmap)


def shift_tree(path: Path, base: int) -> None:
    """Give every file of ``path`` with ids 0..65535 the ids base+0..base+65535 (a copy
    made for an unprivileged container, or a privileged container's upper layer when it
    becomes unprivileged). chown clears set-id bits: they are put back."""
    def shift(p: str, st: os.stat_result) -> None:
        uid = st.st_uid + base if st.st_uid < 65536 else st.st_uid
        gid = st.st_gid + base if st.st_gid < 65536 else st.st_gid
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(p, uid, gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
            os.chmod(p, st.st_mode & 0o7777)

    shift(str(path), os.lstat(path))
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            shift(p, os.lstat(p))


def _prepare_copy(layout: RootfsLayout, image: Image, idmap: int | None = None) -> None:
    if layout.rootfs.exists():
        # A copy interrupted before its record was written: not to be trusted.
        remove_tree(layout.rootfs)
    partial = layout.base / f".rootfs-copying-{os.getpid()}"
    remove_tree(partial)
    try:
        run(["cp", "-a", "--reflink=auto", "--", str(image.rootfs), str(partial)],
            timeout=1800)
        if idmap is not None:
            shift_tree(partial, idmap)
        os.rename(partial, layout.rootfs)
    except BaseException:
        remove_tree(partial)
        raise


def mount(layout: RootfsLayout, lower: Path, idmap: int | None = None) -> bool:
    """Mount the overlay at ``rootfs/`` unless it is; True when mounted now. Unprivileged
    (``idmap``): its lower layer is the image mounted idmapped at ``lower/``."""
    if mounted(layout.rootfs):
        return False
    if not (lower / "sbin").exists() and not (lower / "usr/sbin").exists():
        raise FjordError(f"image {lower} of container {layout.name} is missing",
                         hint="it was pruned or removed by hand; recreate the container")
    if idmap is not None:
        overlay_options(layout, lower)  # refuses paths overlayfs cannot take
        layout.lower.mkdir(exist_ok=True)
        if not mounted(layout.lower):
            mount_idmapped(lower, layout.lower, idmap)
        lower = layout.lower
    run(["mount", "-t", "overlay", f"fjord-{layout.name}", "-o",
         overlay_options(layout, lower), str(layout.rootfs)], timeout=60)
    return True


def unmount(layout: RootfsLayout) -> bool:
    """Unmount the overlay (the container must be stopped); True when it was mounted."""
    done = False
    if mounted(layout.rootfs):
        run(["umount", str(layout.rootfs)], timeout=60,
            hint=f"is container {layout.name} still running? stop it first")
        done = True
    if mounted(layout.lower):
        run(["umount", str(layout.lower)], timeout=60)
    return done


def ensure_mounted(name: str, base: Path | None = None) -> bool:
    """Mount a recorded overlay container's root if it is not (the libvirt hook's job)."""
    layout = RootfsLayout.of(name, base)
    record = read_record(layout)
    if record is None or record.mode != "overlay":
        return False
    if not record.lower:
        raise FjordError(f"container {name}: {record.rebuilt}",
                         hint="`fjord apply` rewrites the record (the image the file asks "
                         "for) and mounts the root")
    return mount(layout, Path(record.lower), record.idmap)


TRASH = ".trash"


def destroy(name: str, base: Path | None = None, *, background: bool = True) -> bool:
    """Remove everything of a container's root (it must be stopped); True if it existed.

    The container's directory is renamed into ``.trash/`` at once (its name, record and
    addresses are free from then on) and its files are deleted by a process of its own
    (``rm -rf --one-file-system``, in a new session: a full copy is thousands of files
    and takes seconds to delete on a busy disk). What an interrupted deletion leaves in
    the trash is deleted by the next destroy. ``background=False`` waits instead."""
    layout = RootfsLayout.of(name, base)
    if not layout.base.exists():
        return False
    unmount(layout)
    trash = layout.base.parent / TRASH
    trash.mkdir(mode=0o700, exist_ok=True)
    doomed = trash / f"{name}.{time.time_ns()}"
    try:
        os.rename(layout.base, doomed)
    except OSError:  # another filesystem under the directory, say: delete in place
        remove_tree(layout.base)
        return True
    if not background:
        remove_tree(doomed)
        return True
    import subprocess

    leftovers = sorted(str(p) for p in trash.iterdir())
    subprocess.Popen(["rm", "-rf", "--one-file-system", "--", *leftovers],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return True


def disk_usage(layout: RootfsLayout) -> int:
    """Bytes this container's root costs beyond its image (the whole copy for copies)."""
    record = read_record(layout)
    if record is not None and record.mode == "copy":
        return tree_size(layout.rootfs)
    return tree_size(layout.upper) + tree_size(layout.work)
