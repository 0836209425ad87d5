"""Apply: each resource is re-read right before it is changed (never a stale plan),
changed, then re-read again: it must have converged. The first failure stops the run
with the resource, the command and its stderr; the next apply continues from there."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from fjord.engine.change import Change
from fjord.engine.order import order
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError
from fjord.state import state_dir


class Reporter(Protocol):
    def started(self, change: Change) -> None: ...
    def finished(self, change: Change, seconds: float) -> None: ...
    def failed(self, change: Change, error: BaseException) -> None: ...


class ApplyError(FjordError):
    def __init__(self, change: Change, error: BaseException, done: list[Change]) -> None:
        self.change = change
        self.done = done
        if isinstance(error, FjordError):
            reason = error.message
        else:
            reason = f"{type(error).__name__}: {error}"
        super().__init__(
            f"{change.resource}: {change.action} failed ({change.detail})\n{reason}",
            hint=getattr(error, "hint", None)
            or "fix the cause and run apply again: it continues from where the host is",
        )


def apply(resources: Sequence[Resource], ctx: Context, reporter: Reporter) -> list[Change]:
    """Run the changes; ``ctx`` is the plan's (its drivers' caches are the plan's reads,
    made under the same apply lock).

    Each resource is read again right before it is changed. What drivers cached stays
    valid until a change runs: right after one, every cache is dropped and the changed
    resource is read back from the host (it must have converged), which fills the
    caches the next resources read. So a run of resources that need nothing costs no
    new round trips, and nothing is decided on a read older than the last change."""
    done: list[Change] = []
    for resource in order(resources):
        try:
            changes = resource.changes(ctx)
        except StateUnreadable as exc:
            raise FjordError(f"{resource.id}: cannot read its state: {exc.message}",
                             hint=exc.hint) from exc
        for change in changes:
            reporter.started(change)
            start = time.monotonic()
            try:
                change.run(ctx)
            except BaseException as exc:
                reporter.failed(change, exc)
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                raise ApplyError(change, exc, done) from exc
            reporter.finished(change, time.monotonic() - start)
            done.append(change)
        if changes:
            ctx.refresh()
            left = resource.changes(ctx)  # fills the caches again, after the change
            if left:
                raise FjordError(
                    f"{resource.id} did not converge; still to do: "
                    + "; ".join(f"{c.action} {c.detail}" for c in left),
                    hint="this is a bug in fjord or something else is changing the host",
                )
    return done


@contextmanager
def apply_lock(wait: float = 0.0) -> Iterator[None]:
    """One apply at a time: a second one waits up to ``wait`` seconds, then refuses."""
    path = state_dir() / "apply.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    raise FjordError(
                        "another fjord apply is running" + (f" (pid {holder})" if holder else ""),
                        hint="wait for it to finish, or use --wait SECONDS",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
