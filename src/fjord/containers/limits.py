"""Whether a container's limits hold, and what gives it cgroups of its own (v1 and v2).

libvirt 9's LXC driver puts each container in a cgroup of its own in the controllers
it knows (cpu, cpuacct, cpuset, memory, devices, freezer, blkio: ``/machine/lxc-PID-
NAME.libvirt-lxc`` without systemd-machined) and sets the limits there. What the
container's systemd does next depends on what it sees, and on the v1 layout
(measured in a lab, DESIGN fact 3):

- libvirt gives the container **no cgroup namespace** (libvirt 9 has no option for one:
  its ``<lxc:namespace>`` shares only net, ipc and uts) and bind-mounts the **whole**
  hierarchies at /sys/fs/cgroup/<controller>, not the container's own cgroup;
- libvirt never makes a cgroup in ``name=systemd`` (nor in ``pids``, which it does not
  know), so the container's init is at ``/`` there;
- systemd takes its ``name=systemd`` path as the root of its tree, in every hierarchy:
  it moves the container's services to ``/system.slice/...`` of memory, pids, devices,
  out of libvirt's cgroup. The memory limit no longer applies to them (a service
  allocated 200 MiB in a container limited to 64 MiB), the devices whitelist neither,
  and the container's systemd manages cgroups beside the other containers'.

The fix is :data:`INIT_PATH` (``fjord-init``, :func:`init_script`, from
``fjord/containers/guest/fjord-init.sh``), a small POSIX shell script that fjord writes
into every container's root and names as the domain's init. Before systemd runs, on
the v1 layout it

1. joins libvirt's cgroup in every hierarchy where the container is elsewhere
   (``name=systemd``, ``pids``, cgroup2): the same path as libvirt's memory cgroup;
2. unshares a **cgroup namespace**, rooted there;
3. mounts /sys/fs/cgroup again from inside it (a tmpfs, each v1 hierarchy): the
   container sees its own cgroup as the root of each, and nothing above;
4. becomes /sbin/init (PID 1 all along; systemd mounts cgroup2 itself).

On the cgroup v2 layout (Debian 12 and 13 with systemd: /proc/self/cgroup has only the
``0::PATH`` line, PATH being libvirt's ``/machine.slice/machine-lxc\x2dPID\x2dNAME.scope
/libvirt``, and libvirt 11 still gives no cgroup namespace and bind-mounts the host's
whole cgroup2 tree) there is one hierarchy and the container is already in libvirt's
cgroup, so it

1. unshares a cgroup namespace, rooted at its cgroup (``unshare --cgroup``, an exec:
   still PID 1);
2. unmounts what libvirt mounted at /sys/fs/cgroup (``umount -R``, then lazily what is
   left) and mounts a fresh cgroup2 there, which, made from inside the namespace, is
   rooted at its own cgroup;
3. becomes /sbin/init: systemd sees ``0::/``, builds init.scope and system.slice under
   libvirt's cgroup, whose ``memory.max`` still applies from above.

systemd then builds its tree under libvirt's cgroup, where the limits are. Where there
is nothing to fix (no cgroup to root a namespace in, or already in a cgroup namespace)
the script becomes /sbin/init at once; where a step fails it says so on the console
(``fjord-init: ...``) and still boots. It leaves its outcome in PID 1's environment
(``FJORD_INIT=cgroupns``, ``kept`` or ``failed: WHY``; systemd does not pass it on to
services), which :func:`cgroups_private` reads from the host to say why a container has
no namespace of its own.

Not a security boundary: without user namespaces the container's root is the host's
root (libvirt's documentation says as much); a root that rewrites fjord-init or
enters another namespace can leave its cgroups. What this guarantees is that the
container's own systemd and its services stay inside the limits, and see only their
own cgroups.

The checks (`fjord check`, `fjord status`) both call :func:`verdicts`
(:func:`limits_enforced` and :func:`cgroups_private`), so they say the same;
:func:`enter_cgroups` puts a process started from the host (`fjord container exec`) in
the container's cgroups, :func:`cgroup_procs` names them for the checks' probes;
:func:`release` removes the empty cgroups fjord-init made, for libvirt's ``release``
hook.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fjord.containers.sandbox import (
    FILTER_PATH,
    INIT_MARKER,
    LOADER_PATH,
    SANDBOX_DOC,
    environ_value,
    privileges_dropped,
)
from fjord.errors import FjordError
from fjord.mountinfo import Mount, parse_mountinfo

INIT_PATH = "/usr/local/sbin/fjord-init"
# lxcfs (the host's daemon, fjord.host.system) mounts at LXCFS_DIR on the host; the
# domain mounts that directory at LXCFS_TARGET in the container, where fjord-init binds
# these files over /proc and leaves FJORD_LXCFS=mounted (or "missing: ...", "failed: ...").
LXCFS_DIR = "/var/lib/lxcfs"
LXCFS_TARGET = "/var/lib/lxcfs"
LXCFS_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
LXCFS_MARKER = "FJORD_LXCFS"
SYSTEM_INIT = "/sbin/init"
# Where libvirt's LXC driver keeps the controller's PID of a running container (as
# fjord.containers.libvirt.LXC_RUN, relative to ``root`` here for the tests).
LXC_RUN = "run/libvirt/lxc"
# libvirt's resource partition without systemd-machined.
PARTITION = "machine"
UNLIMITED = 1 << 60  # v1 reports "no limit" as PAGE_COUNTER_MAX pages: above this

_HEADER = "# Written by fjord; changes here are overwritten by `fjord apply`.\n"


def init_script(system_init: str = SYSTEM_INIT, path: str = INIT_PATH, *,
                cgroup: str = "/sys/fs/cgroup", proc: str = "/proc",
                loader: str = LOADER_PATH, bpf: str = FILTER_PATH,
                lxcfs: str = LXCFS_TARGET) -> str:
    """The content of fjord-init (see the module's documentation). ``cgroup``, ``proc``,
    ``loader``, ``bpf`` and ``lxcfs`` move what it reads and mounts, for the tests only;
    before the last step it binds lxcfs's files over /proc (:data:`LXCFS_FILES`); the
    last step runs the loader (fjord.containers.sandbox) that drops capabilities and
    installs the syscall filter, and becomes ``system_init``."""
    from fjord.containers import guest  # not for the hook, which imports this module

    return guest.render(
        "fjord-init.sh", system_init=guest.safe_path(system_init), path=guest.safe_path(path),
        cgroup=guest.safe_path(cgroup), proc=guest.safe_path(proc),
        loader=guest.safe_path(loader), bpf=guest.safe_path(bpf),
        lxcfs=guest.safe_path(lxcfs), files=guest.safe_words(list(LXCFS_FILES)))


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup: {controllers ("memory", "cpu,cpuacct", "name=systemd"; "" for
    cgroup2): path}, the paths relative to the reader's cgroup namespace."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def memory_key(groups: dict[str, str]) -> str | None:
    """The key of the hierarchy that holds the memory controller ("" for cgroup2)."""
    for key in groups:
        if "memory" in key.split(","):
            return key
    return "" if "" in groups else None


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True)
class RunningContainer:
    """A running container as the host sees it."""

    name: str
    controller: int          # libvirt_lxc, in the container's cgroups
    init: int                # the container's PID 1
    groups: dict[str, str]   # the controller's cgroups: libvirt's


def running(name: str, root: Path = Path("/")) -> RunningContainer | None:
    proc = root / "proc"
    try:
        controller = int((root / LXC_RUN / f"{name}.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    children = _read(proc / str(controller) / "task" / str(controller) / "children")
    groups = _read(proc / str(controller) / "cgroup")
    if not children or not children.split() or groups is None:
        return None
    return RunningContainer(name, controller, int(children.split()[0]), parse_proc_cgroup(groups))


def _members(c: RunningContainer, proc: Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(PID, command name, cgroups) of every process in the container's PID namespace."""
    pidns = _link(proc / str(c.init) / "ns" / "pid")
    if pidns is None:
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit() or _link(entry / "ns" / "pid") != pidns:
            continue
        text = _read(entry / "cgroup")
        if text is not None:
            yield int(entry.name), (_read(entry / "comm") or "?").strip(), \
                parse_proc_cgroup(text)


def _mount_for(mounts: list[Mount], key: str, path: str) -> Mount | None:
    """The mount through which this process reaches ``path`` of hierarchy ``key``."""
    found = [m for m in mounts if under(path, m.root) and (
        (key == "" and m.fstype == "cgroup2")
        or (key != "" and m.fstype == "cgroup" and set(key.split(",")) <= set(m.options)))]
    return min(found, key=lambda m: len(m.root), default=None)


def cgroup_dir(key: str, path: str, root: Path = Path("/"),
               mounts: list[Mount] | None = None) -> Path | None:
    """The directory of cgroup ``path`` of hierarchy ``key`` in this mount namespace."""
    if mounts is None:
        mounts = parse_mountinfo(_read(root / "proc/self/mountinfo") or "")
    m = _mount_for(mounts, key, path)
    if m is None:
        return None
    rel = path[len(m.root.rstrip("/")):].lstrip("/")
    return root / m.point.lstrip("/") / rel


def _human(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.1f} GiB"


def _memory_numbers(d: Path, v2: bool) -> tuple[int | None, int | None, int | None]:
    """(limit, usage, peak) in bytes; limit None when there is none."""
    names = (("memory.max", "memory.current", "memory.peak") if v2 else
             ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max_usage_in_bytes"))
    values: list[int | None] = []
    for name in names:
        text = (_read(d / name) or "").strip()
        values.append(int(text) if text.isdigit() else None)
    limit = values[0] if values[0] is not None and values[0] < UNLIMITED else None
    return limit, values[1], values[2]


def limits_enforced(name: str, *, expected: int | None = None,
                    root: Path = Path("/")) -> tuple[bool, str]:
    """Whether container ``name``'s memory limit applies to all its processes: every
    process of its PID namespace is in libvirt's memory cgroup (or below it), and that
    cgroup has a limit (``expected`` bytes when given). The second item says why, in
    one line for `fjord check` and `fjord status`."""
    c = running(name, root)
    if c is None:
        return False, f"container {name} is not running"
    key = memory_key(c.groups)
    if key is None:
        return False, "the host has no memory cgroup controller: no memory limit applies"
    own = c.groups[key]
    if own == "/":
        return False, "libvirt made no memory cgroup for it: no memory limit applies"
    members = list(_members(c, root / "proc"))
    outside = [(pid, comm, g.get(key, "?")) for pid, comm, g in members
               if not under(g.get(key, ""), own)]
    d = cgroup_dir(key, own, root)
    limit, usage, peak = _memory_numbers(d, key == "") if d else (None, None, None)
    if outside:
        shown = ", ".join(f"{pid} {comm} in {path}" for pid, comm, path in outside[:4])
        more = f" and {len(outside) - 4} more" if len(outside) > 4 else ""
        return False, (f"{len(outside)} of {len(members)} processes are outside its memory "
                       f"cgroup {own}, where the limit does not apply: {shown}{more}")
    if d is None:
        return False, f"its memory cgroup {own} is not mounted here: cannot read its limit"
    if limit is None:
        return False, f"its memory cgroup {own} has no limit"
    if expected is not None and limit != expected:
        return False, (f"its memory cgroup {own} is limited to {_human(limit)}, not the "
                       f"declared {_human(expected)}")
    used = f", using {_human(usage)}" if usage is not None else ""
    top = f" (peak {_human(peak)})" if peak is not None else ""
    return True, (f"all {len(members)} processes in {own}: limit {_human(limit)}{used}{top}")


def memory_limit(name: str, root: Path = Path("/")) -> tuple[bool, int | None]:
    """(known, limit): the memory limit of running container ``name``'s cgroup as the
    kernel applies it now (memory.max on cgroup v2, memory.limit_in_bytes on v1), None
    for no limit. Not known (False, None) when it is not running or its cgroup cannot
    be read: the container's root user can write that file (it is its own cgroup), so
    it is read each time, not taken from libvirt's idea of it."""
    c = running(name, root)
    if c is None:
        return False, None
    key = memory_key(c.groups)
    if key is None or c.groups.get(key, "/") == "/":
        return False, None
    d = cgroup_dir(key, c.groups[key], root)
    if d is None:
        return False, None
    text = (_read(d / ("memory.max" if key == "" else "memory.limit_in_bytes")) or "").strip()
    if text == "max":
        return True, None
    if not text.isdigit():
        return False, None
    limit = int(text)
    return True, (limit if limit < UNLIMITED else None)


def same_limit(live: int | None, declared: int) -> bool:
    """Whether a cgroup's memory limit is ``declared`` bytes (the kernel keeps whole pages)."""
    page = os.sysconf("SC_PAGE_SIZE")
    return live is not None and live // page == declared // page


MARKER = INIT_MARKER  # what fjord-init leaves in PID 1's environment


def init_outcome(pid: int, root: Path = Path("/")) -> str | None:
    """What fjord-init said it did for the container whose PID 1 is ``pid``: "cgroupns"
    (a cgroup namespace of its own), "kept" (nothing to do), "failed: WHY"; None when
    PID 1 never went through this fjord-init (another init, or an older fjord-init)."""
    return environ_value(pid, MARKER, root)


def _no_namespace(name: str, outcome: str | None) -> str:
    """Why a container has no cgroup namespace, from what fjord-init left."""
    restart = f"fjord container restart {name}"
    if outcome is None:
        return (f"fjord-init did not run (is its init {INIT_PATH}?), or it started with an "
                f"older fjord-init that left cgroup v2 alone: restart it ({restart})")
    if outcome.startswith("failed:"):
        return (f"fjord-init could not make one: {outcome.partition(':')[2].strip()} "
                f"(its console says more after a restart: {restart}, then "
                f"fjord container console {name})")
    return (f"fjord-init found nothing to do ({outcome}): no cgroup of its own to root a "
            "namespace in")


def cgroups_private(name: str, root: Path = Path("/")) -> tuple[bool, str]:
    """Whether container ``name`` sees only its own cgroups: its init is in a cgroup
    namespace of its own (not the host's, or the lab server's), rooted in its own
    cgroup, and every mount of the memory hierarchy it has (cgroup2 on v2) shows that
    cgroup as its root, not the host's tree that libvirt bind-mounted there."""
    c = running(name, root)
    if c is None:
        return False, f"container {name} is not running"
    proc = root / "proc"
    mine, host = _link(proc / str(c.init) / "ns" / "cgroup"), \
        _link(proc / str(c.controller) / "ns" / "cgroup")
    if mine is None or host is None:
        return False, "cannot read its cgroup namespace"
    if mine == host:
        return False, ("no cgroup namespace: it sees the host's whole cgroup tree; "
                       + _no_namespace(name, init_outcome(c.init, root)))
    key = memory_key(c.groups)
    init_groups = parse_proc_cgroup(_read(proc / str(c.init) / "cgroup") or "")
    if key is None:
        return True, "own cgroup namespace (the host has no memory cgroup controller)"
    own = c.groups[key]
    if not under(init_groups.get(key, ""), own):
        return False, "its cgroup namespace is not rooted in its own cgroup"
    # Read from here, a mount's root is relative to this process's cgroup namespace: a
    # mount the container made from inside its namespace is rooted at ``own``.
    wider = [m for m in parse_mountinfo(_read(proc / str(c.init) / "mountinfo") or "")
             if ((key == "" and m.fstype == "cgroup2") or
                 (key != "" and m.fstype == "cgroup" and set(key.split(",")) <= set(m.options)))
             and not under(m.root, own)]
    if wider:
        m = wider[0]
        return False, (f"own cgroup namespace, but its {m.point} still shows the cgroup "
                       f"tree from {m.root} (wider than its own {own}); "
                       + _no_namespace(name, init_outcome(c.init, root)))
    return True, f"own cgroup namespace, rooted at {own}"


LIMITS_DOC = "see docs/containers.md: limits and cgroups"
LXCFS_DOC = "see docs/containers.md: what free and top show"


def proc_files(name: str, root: Path = Path("/")) -> tuple[bool, str]:
    """Whether container ``name`` reads lxcfs's /proc files (its own memory limit and
    uptime in free, top, ps), from what fjord-init left in PID 1's environment."""
    c = running(name, root)
    if c is None:
        return False, f"container {name} is not running"
    outcome = environ_value(c.init, LXCFS_MARKER, root)
    restart = f"fjord container restart {name}"
    if outcome == "mounted":
        return True, "lxcfs's meminfo, cpuinfo, stat, uptime... over its /proc"
    if outcome is None:
        return False, (f"started before fjord bound lxcfs's files (an older fjord-init, or "
                       f"another init): restart it ({restart})")
    if outcome.startswith("missing:"):
        return False, (f"lxcfs did not answer when it started: free and top show the host's "
                       f"memory; start lxcfs (`fjord apply`), then {restart}")
    return False, f"fjord-init {outcome}; restart it ({restart})"


def verdicts(name: str, *, expected: int | None = None,
             root: Path = Path("/")) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for a running container's cgroups, the same lines for `fjord
    check` and `fjord status`: its memory limit holds for all its processes, it sees only
    its own cgroups, its syscall filter holds, it reads lxcfs's /proc files. Never
    raises: what cannot be read is a failed line."""
    def sandbox() -> tuple[bool, str]:
        c = running(name, root)
        if c is None:
            return False, f"container {name} is not running"
        return privileges_dropped(name, c.init, root)

    out = []
    for what, verdict, doc in (
            ("memory limit enforced",
             lambda: limits_enforced(name, expected=expected, root=root), LIMITS_DOC),
            ("sees only its own cgroups", lambda: cgroups_private(name, root=root),
             LIMITS_DOC),
            ("syscall filter and capabilities", sandbox, SANDBOX_DOC),
            ("limit-aware /proc (lxcfs)", lambda: proc_files(name, root), LXCFS_DOC)):
        try:
            ok, detail = verdict()
        except Exception as exc:  # a process that went away mid-read, an odd file
            ok, detail = False, f"cannot tell: {type(exc).__name__}: {exc}"
        out.append((what, ok, detail if ok else f"{detail} ({doc})"))
    return out


def cgroup_procs(pid: int, root: Path = Path("/")) -> list[Path]:
    """The ``cgroup.procs`` files of process ``pid``'s cgroups, in every hierarchy
    mounted here (a hierarchy not mounted here, such as cgroup2 in the lab, is left
    out). Writing a PID there moves that process; writing 0 moves the writer."""
    text = _read(root / "proc" / str(pid) / "cgroup")
    if text is None:
        raise FjordError(f"process {pid} is gone: cannot join its cgroups")
    mounts = parse_mountinfo(_read(root / "proc/self/mountinfo") or "")
    out = []
    for key, path in parse_proc_cgroup(text).items():
        d = cgroup_dir(key, path, root, mounts)
        if d is not None:
            out.append(d / "cgroup.procs")
    return out


def enter_cgroups(pid: int, root: Path = Path("/")) -> None:
    """Move the calling process into the cgroups of process ``pid`` (a container's init)
    in every hierarchy mounted here, as `virsh lxc-enter-namespace` does: a command run
    in the container from the host (`fjord container exec`) is then under its limits.
    Call it before entering the container's namespaces (nsenter --cgroup included)."""
    me = str(os.getpid()).encode()
    for procs in cgroup_procs(pid, root):
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, me)
        except OSError as exc:
            raise FjordError(f"cannot join cgroup {procs.parent}: {exc.strerror}") from exc
        finally:
            os.close(fd)


# What a delegated cgroup's owner may write (systemd's Delegate=, cgroups(7)): it makes
# sub-cgroups and moves its own processes; the limits of the cgroup itself stay root's.
DELEGATED_FILES = ("cgroup.procs", "tasks", "cgroup.clone_children", "cgroup.subtree_control",
                   "cgroup.threads")


def delegate(name: str, owner: int, root: Path = Path("/")) -> list[Path]:
    """Give an unprivileged container's root (host id ``owner``) its cgroups, as systemd
    delegates a cgroup: each directory and the files that make and move sub-cgroups,
    never the limits. Its systemd then builds its tree under them, inside the limits.
    For libvirt's ``started begin`` hook; fjord-init waits for it. Returns the
    directories delegated.

    - libvirt's cgroups (memory, cpu, devices...: libvirt's path, say ``/machine/lxc-
      PID-NAME.libvirt-lxc``) are delegated as they are;
    - in the hierarchies where libvirt leaves the container at the root (name=systemd,
      pids without machined) the same path is made here and delegated, for fjord-init
      to join; and the root, which libvirt 9 gives the container's root in name=systemd
      (then the last container started would own every container's tree), is given
      back to root. The hierarchy of the memory controller comes last: it is what
      fjord-init waits for."""
    try:
        controller = int((root / LXC_RUN / f"{name}.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return []
    groups = parse_proc_cgroup(_read(root / "proc" / str(controller) / "cgroup") or "")
    key = memory_key(groups)
    own = groups.get(key) if key is not None else None
    if not own or own == "/":
        return []
    mounts = parse_mountinfo(_read(root / "proc/self/mountinfo") or "")
    init = _init_of(controller, root)
    done = []
    for k in sorted(groups, key=lambda k: (k == key, groups[k] == own)):
        path = groups[k]
        if path == "/":
            top = cgroup_dir(k, "/", root, mounts)
            if top is not None and top.is_dir():
                _give(top, owner, 0)
            top = cgroup_dir(k, own, root, mounts)
            if top is None:
                continue
            top.mkdir(parents=True, exist_ok=True)
            base = cgroup_dir(k, "/", root, mounts)
            for parent in top.parents:  # libvirt's partition is root's, whoever made it
                if base is None or parent == base or base not in parent.parents:
                    break
                if (uid := parent.stat().st_uid) != 0:
                    _give(parent, uid, 0)
            d: Path | None = top
        else:
            d = cgroup_dir(k, path, root, mounts)
        if d is None or not d.is_dir():
            continue
        os.chown(d, owner, owner)
        for f in DELEGATED_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.chown(d / f, owner, owner)
        # libvirt's cgroup v2 backend gives the container's root every file of its
        # cgroup, memory.max included: the limits go back to root
        for entry in d.iterdir():
            if entry.name not in DELEGATED_FILES and entry.is_file():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == owner:
                        os.chown(entry, 0, 0)
        if path == "/" and init is not None:
            # the container's init joins it from here: from inside its user namespace
            # it could not mount a hierarchy libvirt did not mount for it (pids)
            with contextlib.suppress(OSError):
                (d / "cgroup.procs").write_text(f"{init}\n")
        done.append(d)
    return done


def _init_of(controller: int, root: Path, wait: float = 5.0) -> int | None:
    """The container's init: the controller's child (any thread's), a moment after the
    start at most."""
    import time

    deadline = time.monotonic() + wait
    while True:
        tasks = root / "proc" / str(controller) / "task"
        try:
            for task in sorted(tasks.iterdir()):
                children = (_read(task / "children") or "").split()
                if children:
                    return int(children[0])
        except OSError:
            return None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _give(d: Path, old: int, new: int) -> None:
    """Give ``d`` and its files that ``old`` owns to ``new``."""
    for p in (d, *d.iterdir()):
        with contextlib.suppress(FileNotFoundError):
            if p.is_file() or p == d:
                if os.stat(p).st_uid == old:
                    os.chown(p, new, new)


def release(name: str, root: Path = Path("/")) -> list[Path]:
    """Remove the empty cgroups earlier starts of container ``name`` left behind: libvirt
    removes its own when the container stops, but not those fjord-init made in the
    hierarchies libvirt does not manage (name=systemd, pids, cgroup2), under
    ``/machine/lxc-PID-NAME.libvirt-lxc``. For libvirt's ``release end`` hook; returns
    what it removed. A cgroup that still holds a process is left alone, and so is the
    whole tree of the container's current start if it runs."""
    pattern = re.compile(rf"lxc-\d+-{re.escape(name)}\.libvirt-lxc")
    current = running(name, root)
    key = memory_key(current.groups) if current else None
    keep = current.groups[key].rsplit("/", 1)[-1] if current and key is not None else None
    removed = []
    for m in parse_mountinfo(_read(root / "proc/self/mountinfo") or ""):
        if m.fstype not in ("cgroup", "cgroup2") or m.root != "/":
            continue
        partition = root / m.point.lstrip("/") / PARTITION
        try:
            tops = [d for d in partition.iterdir()
                    if d.is_dir() and pattern.fullmatch(d.name) and d.name != keep]
        except OSError:
            continue
        for top in tops:
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(dirpath)
                    removed.append(Path(dirpath))
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
                        raise
    return removed
