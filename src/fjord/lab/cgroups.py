"""The lab's own cgroup sub-tree, under every v1 hierarchy of the machine.

Each lab gets /sys/fs/cgroup/<hierarchy>/fjord-lab-<name>/ with two children:
``server`` (the simulated server: the holder of its mount namespace, its daemons,
libvirt's containers, everything `lab exec` starts) and ``upstream`` (the provider
side: the DNS server, `lab upstream` commands). The server sees its sub-cgroup as
the root of every hierarchy (a cgroup namespace plus cgroup mounts inside it), so
nothing in the lab can create or remove cgroups at the machine's roots.

On the hybrid layout the machine also has cgroup2 at /sys/fs/cgroup/unified. The lab
never mounts it (libvirt 9 refuses the hybrid), but the server joins its sub-cgroup
there too before unsharing its cgroup namespace: whatever mounts cgroup2 in the lab
later (a container's systemd does, in hybrid mode) then sees the lab's sub-cgroup as
its root, not the machine's.

The sub-tree is also how the lab finds what it started: `down` and `reboot` freeze
it, kill exactly the processes in it, and remove it depth-first.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from fjord.errors import FjordError

ROOT = Path("/sys/fs/cgroup")
# The v1 controllers libvirt's LXC driver and LXC use; all required.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
# Named hierarchies mounted when present (systemd inside containers wants name=systemd).
NAMED = {"systemd": "name=systemd"}
PARTS = ("server", "upstream")
# cgroup2 beside the v1 hierarchies (the hybrid layout): joined, never mounted in the lab.
UNIFIED = "unified"


def _cgroup_mounts(mountinfo: str | None, fstype: str) -> dict[str, set[str]]:
    """{directory under ROOT: superblock options} of the machine's ``fstype`` mounts."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mountinfo = fh.read()
    mounted: dict[str, set[str]] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != fstype:
            continue
        point = Path(fields[4])
        if point.parent == ROOT:
            mounted[point.name] = set(tail[2].split(","))
    return mounted


def unified(mountinfo: str | None = None) -> bool:
    """Whether the machine has cgroup2 at ROOT/unified (the hybrid layout)."""
    return UNIFIED in _cgroup_mounts(mountinfo, "cgroup2")


def hierarchies(mountinfo: str | None = None) -> dict[str, str]:
    """The machine's v1 hierarchies as {directory under ROOT: mount option}."""
    mounted = _cgroup_mounts(mountinfo, "cgroup")
    missing = [c for c in CONTROLLERS if c not in mounted.get(c, set())]
    if missing:
        raise FjordError(
            f"cgroup v1 controllers not mounted at {ROOT}/<controller>: {', '.join(missing)}",
            hint="the lab needs the v1 (or hybrid) cgroup layout: libvirt 9's LXC driver "
                 "does not run containers on cgroup v2 alone")
    out = {c: c for c in CONTROLLERS}
    for directory, option in NAMED.items():
        if option in mounted.get(directory, set()):
            out[directory] = option
    return out


class LabCgroup:
    def __init__(self, base: str, hierarchy_map: dict[str, str] | None = None,
                 with_unified: bool | None = None) -> None:
        self.base = base
        self._hierarchies = hierarchy_map
        self._unified = with_unified

    @property
    def hierarchies(self) -> dict[str, str]:
        """The v1 hierarchies, mounted in the lab."""
        if self._hierarchies is None:
            self._hierarchies = hierarchies()
        return self._hierarchies

    @property
    def directories(self) -> list[str]:
        """Every hierarchy the lab has a sub-tree in: the v1 ones, and cgroup2 when the
        machine has it beside them."""
        if self._unified is None:
            self._unified = unified()
        return [*self.hierarchies, *([UNIFIED] if self._unified else [])]

    def path(self, hierarchy: str, part: str | None = None) -> Path:
        top = ROOT / hierarchy / self.base
        return top / part if part else top

    def exists(self) -> bool:
        return any(self.path(h).is_dir() for h in self.directories)

    def create(self) -> None:
        for h in self.directories:
            for part in (None, *PARTS):
                d = self.path(h, part)
                d.mkdir(exist_ok=True)
                if h == "cpuset":
                    # A new cpuset has no CPUs and no memory nodes: nothing could run in it.
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        value = (d.parent / knob).read_text().strip()
                        if not (d / knob).read_text().strip():
                            (d / knob).write_text(value)

    def join(self, pid: int, part: str) -> None:
        """Move ``pid`` into the lab's ``part`` in every hierarchy (cgroup2 included)."""
        for h in self.directories:
            if h == UNIFIED:  # a lab made before the lab joined cgroup2 has no sub-tree there
                self.path(h, part).mkdir(parents=True, exist_ok=True)
            (self.path(h, part) / "cgroup.procs").write_text(str(pid))

    def procs(self, part: str | None = None) -> set[int]:
        """Every process in the sub-tree (read from the pids hierarchy)."""
        out: set[int] = set()
        for d in _walk(self.path("pids", part)):
            try:
                text = (d / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            out.update(int(x) for x in text.split())
        return out

    def kill(self, part: str | None = None, timeout: float = 10.0) -> set[int]:
        """Kill every process of the sub-tree; return their PIDs.

        The sub-tree is frozen first so that nothing forks between reading the list
        and killing it; SIGKILL is delivered when it is thawed."""
        freezer = self.path("freezer", part) / "freezer.state"
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs(part)
            if not pids:
                return killed
            if time.monotonic() > deadline:
                raise FjordError(f"processes of {self.base} do not die: {sorted(pids)}",
                                 hint="look at them with ps; they may be stuck in the kernel")
            frozen = _freeze(freezer)
            for pid in self.procs(part) if frozen else pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            if frozen:
                freezer.write_text("THAWED")
            _wait_empty(self, part, min(deadline, time.monotonic() + 1.0))

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the sub-tree, children first (it must hold no process any more)."""
        deadline = time.monotonic() + timeout
        for h in self.directories:
            top = self.path(h)
            for d in sorted(_walk(top), key=lambda p: len(p.parts), reverse=True):
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as exc:
                        # EBUSY while exiting tasks are still being released.
                        if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                            raise FjordError(f"cannot remove cgroup {d}: {exc.strerror}") \
                                from exc
                        time.sleep(0.01)


def _walk(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        return
    for dirpath, dirnames, _ in os.walk(top):
        yield Path(dirpath)
        dirnames.sort()


def _freeze(state: Path, timeout: float = 2.0) -> bool:
    try:
        state.write_text("FROZEN")
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.read_text().strip() == "FROZEN":
            return True
        time.sleep(0.002)
    return True  # still FREEZING: kill what we see; the loop in kill() catches the rest


def _wait_empty(cg: LabCgroup, part: str | None, deadline: float) -> None:
    while cg.procs(part) and time.monotonic() < deadline:
        time.sleep(0.005)
