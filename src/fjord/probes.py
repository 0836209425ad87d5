"""Probes and check results: what `fjord check`'s checks of every layer are made of.

A probe is a program fjord runs to find out something: it has its own timeout, after
which its whole process tree is killed (:func:`probe`); a probe that does not answer, a
program that is missing, or an unexpected error in one check becomes one ✗ line that
says so (:func:`guard`). The checks themselves are in :mod:`fjord.check` (the host's)
and :mod:`fjord.containers.checks`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from fjord.errors import FjordError
from fjord.runner import format_argv, prepare

log = logging.getLogger("fjord.check")

# How long a probe may take before it is killed, and the check is ✗.
PING_TIMEOUT = 10.0
PROBE_TIMEOUT = 15.0
# After a kill, how long to wait for the pipes to close.
REAP_TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- probes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a probe did. ``failure`` is set when it gave no answer of its own: it timed
    out (``timed_out``), the program is missing, or it could not be started."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    failure: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.returncode == 0

    def last_line(self) -> str:
        """The last line it printed (stdout first), or why it said nothing."""
        if self.failure is not None:
            return self.failure
        text = (self.stdout.strip() or self.stderr.strip()).splitlines()
        return text[-1].strip() if text else f"exit status {self.returncode}"


def _descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every process below ``pid`` (children of each of its threads, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list((proc / str(parent) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in out:
                    out.append(child)
                    todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group and every process below it (nsenter's child in a
    container's PID namespace, a shell's pipeline, what left the group)."""
    below = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in [proc.pid, *below]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _joiner(procs: Sequence[Path]) -> tuple[list[int], Callable[[], None] | None]:
    """Open the ``cgroup.procs`` files here; the returned function, run in the child
    between fork and exec, writes 0 (this process) to each: the probe is in the
    container's cgroups before it runs anything, children included."""
    fds = []
    try:
        for path in procs:
            fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise

    def join() -> None:
        for fd in fds:
            os.write(fd, b"0")

    return fds, (join if fds else None)


def probe(argv: Sequence[str], *, timeout: float = PROBE_TIMEOUT,
          env: dict[str, str] | None = None, cgroups: Sequence[Path] = ()) -> Probe:
    """Run ``argv`` for a check: in a session of its own, in ``cgroups`` (the
    ``cgroup.procs`` files of a container's cgroups) from its first instruction on,
    and never longer than ``timeout`` seconds: then its whole process tree is killed.
    Never raises for the program's sake; see :class:`Probe`."""
    args, full_env = prepare(argv, env)
    start = time.monotonic()

    def failed(why: str, timed_out: bool = False, out: str = "", err: str = "") -> Probe:
        log.debug("  -> %s", why)
        return Probe(args, None, out, err, time.monotonic() - start, why, timed_out)

    try:
        fds, join = _joiner(cgroups)
    except OSError as exc:
        return failed(f"cannot join the container's cgroups ({exc.filename}: "
                      f"{exc.strerror})")
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", env=full_env, start_new_session=True,
            preexec_fn=join)
    except FileNotFoundError:
        return failed(f"program not found: {args[0]}")
    except (OSError, subprocess.SubprocessError) as exc:
        return failed(f"cannot start {args[0]}: {exc}")
    finally:
        for fd in fds:
            os.close(fd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        try:
            out, err = proc.communicate(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # something still holds its pipes
            kill_tree(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
            out, err = "", ""
        return failed(f"no answer after {timeout:g} s (stopped: {format_argv(args)})",
                      True, out or "", err or "")
    except BaseException:
        kill_tree(proc)
        proc.wait()
        raise
    # what it left behind in its process group (a shell's background job) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - start
    log.debug("  -> %d in %.3f s", proc.returncode, seconds)
    return Probe(args, proc.returncode, out, err, seconds)


def one_line(exc: FjordError) -> str:
    """An error's message and hint as one line of a report."""
    text = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
    return f"{text} ({exc.hint})" if exc.hint else text


def guard(name: str, check: Callable[[], tuple[bool, str]]) -> CheckResult:
    """One check as one result: what ``check`` returns (ok, detail), or ✗ with what went
    wrong when it raised (fjord's errors say what to do; anything else is a bug in the
    check, said as such, and the other checks go on)."""
    try:
        ok, detail = check()
    except FjordError as exc:
        return CheckResult(name, False, one_line(exc))
    except Exception as exc:
        log.debug("check %r failed", name, exc_info=True)
        return CheckResult(name, False, f"the check itself failed: {type(exc).__name__}: "
                           f"{exc} (a bug in fjord; --verbose shows where)")
    return CheckResult(name, ok, detail)


def collect(label: str, results: Iterable[CheckResult]) -> Iterator[CheckResult]:
    """The results of a group of checks; an error between them (in the group's own
    code, not in a guarded check) ends the group with one ✗, not the whole check."""
    try:
        yield from results
    except Exception as exc:
        log.debug("checks of %s failed", label, exc_info=True)
        detail = one_line(exc) if isinstance(exc, FjordError) else \
            f"{type(exc).__name__}: {exc} (a bug in fjord; --verbose shows where)"
        yield CheckResult(f"{label}: remaining checks", False,
                          f"not run: the checks stopped on an error: {detail}")


def ping(target: str, *, via: str | None = None, v6: bool = False, count: int = 2,
         prefix: list[str] | None = None, cgroups: Sequence[Path] = (),
         env: dict[str, str] | None = None) -> tuple[bool, str]:
    if v6 and via and ip_address(target).is_link_local:
        target = f"{target}%{via}"
    argv = [*(prefix or []), "ping", *(["-6"] if v6 else ["-4"]), "-n", "-q",
            "-c", str(count), "-i", "0.2", "-W", "2"]
    if via and not target.endswith(f"%{via}"):
        argv += ["-I", via]
    out = probe([*argv, target], timeout=PING_TIMEOUT, cgroups=cgroups, env=env)
    if out.failure is not None:
        return False, out.failure
    last = (out.stdout.strip().splitlines() or [out.stderr.strip() or "no answer"])[-1]
    summary = next((line for line in out.stdout.splitlines() if "transmitted" in line), last)
    return out.ok, summary.strip()
