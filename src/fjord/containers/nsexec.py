"""Entering a running container without handing it anything of the host's
(`fjord container exec` and the checks' probes run this as a program of its own):

    python -I -m fjord.containers.nsexec --pid PID [--tty] -- COMMAND...

It runs single-threaded and, in this order:

1. joins the cgroups of the container's init (process PID), so that what follows is
   under the container's limits;
2. reads the init's capability sets (``CapBnd`` and ``CapEff`` of /proc/PID/status) and
   opens its namespaces, root and the C library while everything is still the host's;
3. marks itself non-dumpable, enters the cgroup, IPC, UTS, network, PID and mount
   namespaces and, when the init has one of its own, the user namespace (then becomes
   its root), and changes its root to the init's;
4. drops every capability the init does not have from its bounding set, its permitted,
   effective and inheritable sets and clears the ambient set, so that COMMAND (root in
   the container) gets at most the init's capabilities; when the init runs under
   fjord's syscall filter (``Seccomp: 2``), installs the same filter
   (:func:`fjord.containers.sandbox.bpf_program`, built here, never read from the
   container), so COMMAND can do no more than the container's own processes;
5. forks COMMAND's process (the first one inside the PID namespace), which starts a
   session of its own (with ``--tty``, standard input as its controlling terminal),
   closes every descriptor but 0, 1 and 2 and executes COMMAND; this process waits for
   it, forwards SIGTERM, SIGHUP, SIGINT and SIGQUIT to it and exits with its status
   (128+N for signal N, as a shell does). COMMAND's environment is PATH, TERM, HOME and
   LANG of this process's, nothing else.

No program of the container's runs before step 4: nsenter followed by setpriv would run
the container's own setpriv (and its dynamic loader) with the host's capabilities. After
step 3 nothing is imported (``sys.path`` is emptied): a module file would be the
container's. Standard input, output and error are whatever the caller gave (fjord gives a
pseudo-terminal it relays, or pipes), never the operator's terminal.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fjord.containers import sandbox

# entered in this order (nsenter's), the user namespace last: host root may enter the
# others directly, and joining the user namespace first would take that right away
NAMESPACES = (("cgroup", 0x02000000), ("ipc", 0x08000000), ("uts", 0x04000000),
              ("net", 0x40000000), ("pid", 0x20000000), ("mnt", 0x00020000))
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522
TIOCSCTTY = 0x540E
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
# all COMMAND gets of the caller's environment (fjord.containers.lifecycle.container_env)
ENVIRONMENT = ("PATH", "TERM", "HOME", "LANG")


class EnterError(Exception):
    """The container cannot be entered (message says why)."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class Target:
    """What COMMAND gets of the container whose init is ``pid``."""

    pid: int
    caps: int                       # CapBnd & CapEff of the init
    user_namespace: bool            # the init has a user namespace other than ours
    filtered: bool = False          # the init runs under a seccomp filter (Seccomp: 2)


def status_filtered(text: str) -> bool:
    """Whether a /proc/PID/status text says its process runs under a seccomp filter."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields.get("Seccomp", "").strip() == "2"


def status_caps(text: str) -> tuple[int, int]:
    """``CapBnd`` and ``CapEff`` of a /proc/PID/status text."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["CapBnd"].strip(), 16), int(fields["CapEff"].strip(), 16)
    except (KeyError, ValueError) as exc:
        raise EnterError(f"no capability sets in the init's status ({exc})") from exc


def caps_names(mask: int) -> list[int]:
    return [n for n in range(64) if mask >> n & 1]


def target(pid: int, proc: Path = Path("/proc")) -> Target:
    try:
        status = (proc / str(pid) / "status").read_text()
        bnd, eff = status_caps(status)
        theirs = os.stat(proc / str(pid) / "ns" / "user").st_ino
        ours = os.stat(proc / "self" / "ns" / "user").st_ino
    except FileNotFoundError as exc:
        raise EnterError(f"process {pid} is gone") from exc
    return Target(pid, bnd & eff, theirs != ours, status_filtered(status))


def helper_argv(pid: int, argv: Sequence[str], tty: bool = False) -> list[str]:
    """The command line that runs ``argv`` in the container whose init is ``pid``."""
    return [sys.executable, "-I", "-m", "fjord.containers.nsexec", "--pid", str(pid),
            *(["--tty"] if tty else []), "--", *argv]


def _check(ok: int, libc: ctypes.CDLL, what: str) -> None:
    if ok != 0:
        err = ctypes.get_errno()
        raise EnterError(f"{what}: {os.strerror(err)}")


def _drop_caps(libc: ctypes.CDLL, keep: int, last_cap: int) -> None:
    for cap in range(last_cap + 1):
        if not keep >> cap & 1:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), libc,
                   f"cannot drop capability {cap} from the bounding set")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), libc,
           "cannot clear the ambient capabilities")
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), data), libc, "capget")
    for i in range(2):
        part = keep >> (32 * i) & 0xFFFFFFFF
        data[i].effective &= part
        data[i].permitted &= part
        data[i].inheritable &= part
    _check(libc.capset(ctypes.byref(header), data), libc, "cannot lower the capabilities")


def _join_cgroups(pid: int) -> None:
    from fjord.containers.limits import cgroup_procs

    for procs in cgroup_procs(pid):
        try:
            procs.write_text("0")
        except OSError as exc:
            raise EnterError(f"cannot join cgroup {procs.parent}: {exc.strerror}") from exc


def enter(t: Target) -> None:
    """Steps 1-4 of the module's description, in this process."""
    _join_cgroups(t.pid)
    libc = ctypes.CDLL(None, use_errno=True)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    program = sandbox.bpf_program() if t.filtered else None
    base = f"/proc/{t.pid}"
    fds: list[tuple[str, int, int]] = []
    try:
        for name, flag in NAMESPACES:
            fds.append((name, flag, os.open(f"{base}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
        if t.user_namespace:
            fds.append(("user", CLONE_NEWUSER,
                        os.open(f"{base}/ns/user", os.O_RDONLY | os.O_CLOEXEC)))
        root = os.open(f"{base}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(("root", 0, root))
    except FileNotFoundError as exc:
        for _, _, fd in fds:
            os.close(fd)
        raise EnterError(f"process {t.pid} is gone") from exc
    # from here on nothing is loaded from a file: the files would be the container's
    sys.path[:] = []
    sys.path_importer_cache.clear()
    # no other process may read this one's memory (ptrace, /proc/PID/mem) before exec
    _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), libc, "prctl(PR_SET_DUMPABLE)")
    try:
        for name, flag, fd in fds[:-1]:
            _check(libc.setns(fd, flag), libc, f"cannot enter the {name} namespace")
        if t.user_namespace:
            try:
                os.setgroups([])
            except OSError as exc:  # "deny" in /proc/PID/setgroups
                if exc.errno != errno.EPERM:
                    raise
            os.setgid(0)
            os.setuid(0)
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
    finally:
        for _, _, fd in fds:
            os.close(fd)
    _drop_caps(libc, t.caps, last_cap)
    if program is not None:
        _install_filter(libc, program)


def _install_filter(libc: ctypes.CDLL, program: bytes) -> None:
    """The container's syscall filter on this process (inherited by COMMAND). Without
    no_new_privs, as fjord-init does: CAP_SYS_ADMIN (kept, the init has it) allows it."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), libc,
           "cannot install the container's syscall filter")


def _child(argv: Sequence[str], tty: bool) -> None:
    """COMMAND's process: never returns."""
    try:
        os.setsid()
        if tty:
            fcntl.ioctl(0, TIOCSCTTY, 0)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.execvpe(argv[0], list(argv), {k: os.environ[k] for k in ENVIRONMENT
                                         if k in os.environ})
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        os.write(2, f"fjord: cannot run {argv[0]}: {exc.strerror}\n".encode())
        os._exit(code)
    except BaseException:
        os._exit(126)


def _wait(child: int) -> int:
    def forward(signum: int, frame: object) -> None:
        try:
            os.killpg(child, signum)
        except OSError:
            try:
                os.kill(child, signum)
            except OSError:
                pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except ChildProcessError:
            return 1
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)


def main(args: Sequence[str]) -> int:
    tty = False
    pid = None
    rest = list(args)
    while rest and rest[0] != "--":
        opt = rest.pop(0)
        if opt == "--tty":
            tty = True
        elif opt == "--pid" and rest:
            pid = int(rest.pop(0))
        else:
            os.write(2, f"fjord nsexec: unknown option {opt}\n".encode())
            return 2
    argv = rest[1:]
    if pid is None or not argv:
        os.write(2, b"usage: python -m fjord.containers.nsexec --pid PID [--tty] -- CMD...\n")
        return 2
    try:
        enter(target(pid))
    except Exception as exc:  # EnterError, OSError, FjordError (cgroups): one line
        os.write(2, f"fjord: cannot enter the container: {exc}\n".encode())
        return 125
    child = os.fork()
    if child == 0:
        _child(argv, tty)
    # this process stays outside the container's PID namespace; it keeps only standard
    # error (its own messages)
    os.close(0)
    os.close(1)
    return _wait(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
