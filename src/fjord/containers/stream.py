"""Running a long program while reading its output line by line (for progress bars).

The streaming sibling of :func:`fjord.runner.run`, with the same rules: an argument list
(never a shell), stdin from /dev/null, a timeout, the command logged, and failures that
carry the command line and the end of its output. The program runs in its own process
group so that a timeout, Ctrl-C or SIGTERM ends it *and its children* (mmdebstrap
forks apt and dpkg), and nothing it started outlives the caller.
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
from types import FrameType

from fjord.errors import CommandError, FjordError
from fjord.runner import Result, prepare

log = logging.getLogger("fjord.run")

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
        raise FjordError(
            f"program not found: {args[0]}",
            hint=hint or "install it (make setup installs everything fjord needs)",
        ) from exc
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
