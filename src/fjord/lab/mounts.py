"""The simulated server's filesystem: the machine's, seen through a private mount
namespace in which everything the server writes lands in the lab directory.

Inside the lab's mount namespace (never in the machine's):

=================  ==========================================================
/etc, /root        overlays: the machine's directory below, the lab's
                   ``etc.upper`` / ``root.upper`` above (every write, new file or
                   rename lands in the lab)
/run               the lab's ``run`` (emptied at every `lab reboot`)
/var/lib           the lab's ``var/lib``: its own ``fjord``, ``libvirt``,
                   ``openvswitch``, ``lxc``, ``lxcfs``; every other entry is the machine's,
                   bound read-only
/var/cache         the same, with its own ``libvirt`` and ``fjord`` (shared by
                   all labs: images are built once)
/var/log, /var/tmp  the lab's own
/tmp               the machine's (shared on purpose: tests hand files over)
/sys               a sysfs of the server's network namespace; /sys/fs/cgroup a
                   tmpfs with each v1 hierarchy mounted from inside the lab's
                   cgroup namespace (rooted at the lab's sub-cgroup)
/proc/sys          read-only, except /proc/sys/net (per network namespace)
/var/lib/.fjord-lab-proc  a proc with nothing over it (unprivileged containers'
                   proc mounts need one; see build())
everything else    read-only (``/``, ``/usr``, the repository...)
=================  ==========================================================

So the lab can neither change the machine's files nor its global kernel settings,
and `apt-get install` inside it fails instead of installing on the machine.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fjord.lab import syscalls as sc

# Entries of the shadowed directories that the lab owns (the rest is the machine's).
PRIVATE_ENTRIES = {
    "/var/lib": ("fjord", "libvirt", "openvswitch", "lxc", "lxcfs"),
    "/var/cache": ("fjord", "libvirt"),
}
# Directories entirely the lab's: machine path -> path in the lab directory.
PRIVATE_DIRS = {
    "/run": "run",
    "/var/log": "var/log",
    "/var/tmp": "var/tmp",
}
# Directories seen through an overlay: the machine's below, the lab's writes above.
OVERLAYS = ("/etc", "/root")
# What the lab starts with, copied from the machine when the lab is created (the
# package defaults of a freshly installed server). Small files only.
COPIED = ("/var/lib/libvirt", "/var/lib/openvswitch", "/var/lib/lxc", "/var/cache/libvirt")
CREATED = {  # empty directories a fresh server has, with their modes
    "var/lib/fjord": 0o755,
    "var/lib/lxcfs": 0o755,  # lxcfs's mount point (the lab's lxcfs mounts there)
    "var/log/libvirt/lxc": 0o700,
    "var/log/libvirt/qemu": 0o750,
    "var/log/openvswitch": 0o750,
    "var/log/lxc": 0o755,
    "var/log/apt": 0o755,
    "var/tmp": 0o1777,
}
RUN_DIRS = {"lock": 0o1777, "user": 0o755, "network": 0o755, "openvswitch": 0o755,
            "libvirt": 0o755, "netns": 0o755, "sshd": 0o755}
MAX_COPIED_FILE = 1 << 20
# In the lab's own /var/lib (see build()).
VISIBLE_PROC = "/var/lib/.fjord-lab-proc"
# A file in the lab's /run naming the lab: what tells code inside that it is in a lab
# (the lab's service manager refuses to start daemons anywhere else).
RUN_MARKER = "fjord-lab"


@dataclass(frozen=True)
class LabLayout:
    """Where the parts of a lab's filesystem live in its directory."""

    dir: Path

    def upper(self, machine_path: str) -> Path:
        return self.dir / f"{machine_path.strip('/')}.upper"

    def work(self, machine_path: str) -> Path:
        return self.dir / f"{machine_path.strip('/')}.work"

    @property
    def etc_upper(self) -> Path:
        return self.upper("/etc")

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def shared_cache(self) -> Path:
        """/var/cache/fjord of every lab (image cache), beside the labs."""
        return self.dir.parent / ".cache" / "fjord"

    def private(self, machine_path: str) -> Path:
        for top, rel in PRIVATE_DIRS.items():
            if machine_path == top:
                return self.dir / rel
        return self.dir / machine_path.lstrip("/")


# --- creation (in the machine's namespace; touches only the lab directory) -------------


def create_tree(layout: LabLayout) -> None:
    """The lab's directories as a freshly installed server has them."""
    for top in OVERLAYS:
        layout.upper(top).mkdir(parents=True, exist_ok=True)
        layout.work(top).mkdir(parents=True, exist_ok=True)
    for d in (layout.run, layout.shared_cache):
        d.mkdir(parents=True, exist_ok=True)
    for top in PRIVATE_ENTRIES:
        layout.private(top).mkdir(parents=True, exist_ok=True)
    for machine_path in COPIED:
        if os.path.isdir(machine_path):
            copy_small_tree(Path(machine_path), layout.private(machine_path))
    for rel, mode in CREATED.items():
        path = layout.dir / rel
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    (layout.dir / "var/cache/fjord").mkdir(exist_ok=True)


def reset_run(layout: LabLayout, lab: str) -> None:
    """An empty /run, as after a boot."""
    if layout.run.exists():
        shutil.rmtree(layout.run)
    layout.run.mkdir()
    for name, mode in RUN_DIRS.items():
        (layout.run / name).mkdir()
        os.chmod(layout.run / name, mode)
    (layout.run / "shm").symlink_to("/dev/shm")
    (layout.run / "utmp").touch()
    (layout.run / RUN_MARKER).write_text(lab + "\n")


def copy_small_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` keeping modes and owners, leaving out large files
    (disk images of the machine's own guests have no place in a lab)."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        _same_meta(Path(dirpath), target)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            s, t = Path(dirpath) / name, target / name
            st = os.lstat(s)
            if stat.S_ISLNK(st.st_mode):
                if not t.is_symlink():
                    t.symlink_to(os.readlink(s))
            elif stat.S_ISREG(st.st_mode) and st.st_size <= MAX_COPIED_FILE:
                shutil.copy2(s, t)
                _same_meta(s, t)


def _same_meta(src: Path, dst: Path) -> None:
    st = os.stat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))


# --- the mount namespace (run by the holder, inside the new namespace) -----------------


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    point: str
    fstype: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    out = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail:
            out.append(MountEntry(int(fields[0]), _unescape(fields[4]), tail[0]))
    return out


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> list[MountEntry]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        return parse_mountinfo(fh.read())


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def build(layout: LabLayout, hierarchies: dict[str, str], labs_dir: Path) -> None:
    """Set up the mount namespace the calling process has just unshared."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    keep_rw: set[str] = set()

    # Handles on every bind source, taken while the paths are still visible.
    sources = {top: _open_path(layout.private(top)) for top in PRIVATE_DIRS}
    shadows = {top: _shadow_sources(top, layout.private(top), names, labs_dir)
               for top, names in PRIVATE_ENTRIES.items()}
    shared_cache = _open_path(layout.shared_cache)
    for top in OVERLAYS:
        sc.mount("overlay", top, "overlay", 0,
                 f"lowerdir={top},upperdir={layout.upper(top)},workdir={layout.work(top)}")
        keep_rw.add(top)

    _detach_namespace_holders()
    for top, fd in sources.items():
        _bind_fd(fd, top)
        keep_rw.add(top)
    for top, (base_fd, entries) in shadows.items():
        _bind_fd(base_fd, top)
        keep_rw.add(top)
        for name, fd in entries:
            _bind_fd(fd, f"{top}/{name}", recursive=True)
            sc.mount(None, f"{top}/{name}", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    _bind_fd(shared_cache, "/var/cache/fjord")
    keep_rw.add("/var/cache/fjord")
    if not any(m.point == "/tmp" for m in _mounts()):
        sc.mount("/tmp", "/tmp", None, sc.MS_BIND)
    keep_rw.add("/tmp")

    _detach_namespace_holders(run=False)  # any the recursive binds brought along
    _fresh_sys(hierarchies)
    # A proc with nothing mounted over it: the kernel lets a user namespace (an
    # unprivileged container's) mount proc only where one is fully visible already,
    # which /proc no longer is once /proc/sys is read-only (as on a real server, where
    # systemd's binfmt_misc automount sits on an empty directory and does not count).
    os.makedirs(VISIBLE_PROC, exist_ok=True)
    sc.mount("proc", VISIBLE_PROC, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    keep_rw.add(VISIBLE_PROC)
    sc.mount("/proc/sys", "/proc/sys", None, sc.MS_BIND)
    sc.mount(None, "/proc/sys", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    sc.mount("/proc/sys/net", "/proc/sys/net", None, sc.MS_BIND)
    sc.mount(None, "/proc/sys/net", None, sc.MS_REMOUNT | sc.MS_BIND)  # the bind inherits ro
    _read_only_rest(keep_rw)


def _detach_namespace_holders(*, run: bool = True) -> None:
    """Drop this namespace's copies of namespace files (/run/netns/* of every lab) and
    (``run``) of the machine's /run: a copy would keep other labs' namespaces alive."""
    for m in sorted(_mounts(), key=lambda m: m.point.count("/"), reverse=True):
        if m.fstype == "nsfs" or (run and _under(m.point, "/run")):
            try:
                sc.umount_detach(m.point)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise


def _open_path(path: Path | str) -> int:
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)


def _bind_fd(fd: int, target: str, *, recursive: bool = False) -> None:
    flags = sc.MS_BIND | (sc.MS_REC if recursive else 0)
    sc.mount(f"/proc/self/fd/{fd}", target, None, flags)


def _shadow_sources(top: str, lab_dir: Path, private: Iterable[str],
                    labs_dir: Path) -> tuple[int, list[tuple[str, int]]]:
    """The lab's replacement for ``top`` and handles on the machine's entries in it,
    with a mount point made for each in the lab's directory."""
    entries = []
    for name in sorted(os.listdir(top)):
        machine = f"{top}/{name}"
        if name in private or _under(str(labs_dir), machine):
            continue  # the lab's own, or the labs themselves (never visible inside)
        st = os.lstat(machine)
        point = lab_dir / name
        if stat.S_ISLNK(st.st_mode):
            if not point.is_symlink() or os.readlink(point) != os.readlink(machine):
                _remove(point)
                point.symlink_to(os.readlink(machine))
            continue
        if stat.S_ISDIR(st.st_mode):
            if point.is_symlink() or (point.exists() and not point.is_dir()):
                _remove(point)
            point.mkdir(exist_ok=True)
        elif stat.S_ISREG(st.st_mode):
            if point.is_symlink() or point.is_dir():
                _remove(point)
            point.touch()
        else:
            continue
        entries.append((name, _open_path(machine)))
    return _open_path(lab_dir), entries


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _fresh_sys(hierarchies: dict[str, str]) -> None:
    """sysfs of this network namespace, and the cgroup hierarchies seen from inside
    the cgroup namespace (whose root is the lab's sub-cgroup)."""
    sc.umount_detach("/sys")
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    sc.mount("sysfs", "/sys", "sysfs", flags)
    sc.mount("cgroup_root", "/sys/fs/cgroup", "tmpfs", flags, "mode=755")
    for directory, option in hierarchies.items():
        os.mkdir(f"/sys/fs/cgroup/{directory}")
        sc.mount("cgroup", f"/sys/fs/cgroup/{directory}", "cgroup", flags, option)


def _read_only_rest(keep_rw: set[str]) -> None:
    for m in _mounts():
        if m.point in keep_rw or any(_under(m.point, t) for t in ("/dev", "/proc", "/sys")):
            continue
        try:
            sc.mount(None, m.point, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # hidden under another mount: unreachable anyway
                raise


def shared_images_dir() -> Path:
    """The image cache every lab sees as /var/cache/fjord/images (`fjord image build
    --for-labs` fills it from the machine, which can reach the Debian mirror)."""
    from fjord.lab.names import labs_dir

    return labs_dir() / ".cache" / "fjord" / "images"
