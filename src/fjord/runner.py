"""The one way fjord runs external programs.

Argument lists only (never a shell), stdin from /dev/null unless input is given,
a timeout on everything, every command logged (shown with --verbose), and failures
that carry the command line and its stderr.

Two modes: :func:`run` waits for the program and keeps its output; :func:`stream`
(a long program, for progress bars) hands each line of its output to a callback as it
comes, and runs the program in its own process group so that a timeout, Ctrl-C or
SIGTERM ends it *and its children* (mmdebstrap forks apt and dpkg): nothing it started
outlives the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from fjord.errors import CommandError, FjordError, format_argv

__all__ = ["DEFAULT_TIMEOUT", "Result", "Terminated", "alive", "format_argv", "prepare", "run",
           "sigterm_raises", "stop_group", "stream"]

log = logging.getLogger("fjord.run")

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a program fjord runs: fjord's own (children inherit it: PATH,
    the locale, the FJORD_* variables the process was told), then ``env``. The one
    place below the command line that reads ``os.environ``, to pass it on."""
    full_env = dict(os.environ)
    full_env.setdefault("LC_ALL", "C.UTF-8")
    if env:
        full_env.update(env)
    return full_env


def prepare(argv: Sequence[str],
            env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The argument list as strings and the environment a command runs with (logged)."""
    args = [os.fspath(a) for a in argv]
    full_env = child_env(env)
    log.debug("run: %s", format_argv(args))
    return args, full_env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    hint: str | None = None,
) -> Result:
    """Run ``argv``; raise CommandError when it fails and ``check`` is set."""
    args, full_env = prepare(argv, env)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise _not_found(args, hint) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(args, None, stderr or f"no answer after {timeout} s", hint=hint) from exc
    seconds = time.monotonic() - start
    log.debug("  -> %d in %.3f s", proc.returncode, seconds)
    result = Result(args, proc.returncode, proc.stdout, proc.stderr, seconds)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr or proc.stdout, hint=hint)
    return result


def _not_found(args: list[str], hint: str | None) -> FjordError:
    return FjordError(f"program not found: {args[0]}",
                      hint=hint or "install it (make setup installs everything fjord needs)")


def alive(pid: int) -> bool:
    """Does process ``pid`` exist (someone else's included)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- streaming ---------------------------------------------------------------------------

# How much output a failure message and the Result keep (the end is what explains it).
KEEP_LINES = 400
# After SIGTERM, how long the group gets to clean up before SIGKILL.
GRACE = 10.0


class Terminated(FjordError):
    """fjord itself received SIGTERM while a streamed program ran."""

    exit_code = 143

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM); the interrupted work was cleaned up")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while the block runs, so that ``finally`` clauses
    (removing half-built images) run instead of the process vanishing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_group(proc: subprocess.Popen[bytes], grace: float = GRACE) -> None:
    """End ``proc`` and everything in its process group: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return  # exited on its own, after waiting for its children
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # Also after a clean exit of the leader: children that ignored SIGTERM keep the
    # group (and so its id) alive, so this reaches only what the program started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
    check: bool = True,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Result:
    """Run ``argv``, calling ``on_line`` for each line of its stdout and stderr (merged).

    ``on_start`` receives the process once it runs (tests use it to interrupt a build).
    """
    args, full_env = prepare(argv, env)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=full_env, start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise _not_found(args, hint) from exc
    tail: deque[str] = deque(maxlen=KEEP_LINES)
    try:
        if on_start is not None:
            on_start(proc)
        _pump(proc, args, on_line, tail, start + timeout, hint)
        returncode = proc.wait()
    finally:
        # Whatever happened (timeout, Ctrl-C, SIGTERM, a failing callback), nothing of
        # the program's process group survives this function.
        stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    seconds = time.monotonic() - start
    log.debug("  -> %d in %.3f s", returncode, seconds)
    output = "\n".join(tail)
    if check and returncode != 0:
        raise CommandError(args, returncode, output, hint=hint)
    return Result(args, returncode, "", output, seconds)


def _pump(proc: subprocess.Popen[bytes], args: list[str], on_line: Callable[[str], None],
          tail: deque[str], deadline: float, hint: str | None) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandError(args, None, "\n".join(list(tail)[-20:]) or
                                   "no answer before the timeout", hint=hint)
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                tail.append(line)
                on_line(line)
    if buffer:
        line = buffer.decode(errors="replace")
        tail.append(line)
        on_line(line)
