"""Apply: each resource is re-read right before it is changed (never a stale plan),
changed, then re-read again: it must have converged. The first failure stops the run
with the resource, the command and its stderr; the next apply continues from there.

A resource whose state cannot be read (a container's root holding a FIFO where a file
should be, say) is not a failure of the run: it and what comes after it are left as
they are, everything else converges, and the apply ends in an error naming them."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from fjord.engine.change import Change, Fingerprint, Unreadable
from fjord.engine.order import dependency_map, dependents, order
from fjord.engine.plan import Plan, read_changes
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError
from fjord.state import state_dir


class Reporter(Protocol):
    def started(self, change: Change) -> None: ...
    def finished(self, change: Change, seconds: float) -> None: ...
    def failed(self, change: Change, error: BaseException) -> None: ...


@dataclass
class Ran:
    """One change apply ran: of which resource, how it ended, how long it took."""

    resource: str   # the id of the resource whose change it is
    change: Change
    outcome: Literal["done", "failed"]
    seconds: float


@dataclass
class Journal:
    """What one apply did, for ``apply --json``: the resources in the order apply took
    them, what each one's read (right before its changes) said was still to do, and
    every change run with its outcome and duration."""

    order: list[str] = field(default_factory=list)
    read: dict[str, list[Change]] = field(default_factory=dict)
    ran: list[Ran] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, resource: str, change: Change, ok: bool, seconds: float) -> None:
        with self._lock:
            self.ran.append(Ran(resource, change, "done" if ok else "failed", seconds))

    def outcomes(self, planned: Mapping[str, Sequence[Change]]) -> list[dict[str, Any]]:
        """Every change of the plan (``planned``: resource id -> its changes, as
        Plan.by_resource) and every change apply found besides, in apply's order,
        each with its outcome:

        - ``done``: it ran and succeeded; ``failed``: it ran and raised (apply stopped);
        - ``settled``: its resource, read again right before its turn, no longer needed
          it (an earlier change did it: a hook rebuilding flows, say);
        - ``skipped``: not reached (an earlier change failed, or its resource or one it
          depends on could not be read).

        ``duration_s`` is the change's run time in seconds, None for one that did not
        run."""
        out: list[dict[str, Any]] = []

        def row(change: Change, outcome: str, seconds: float | None) -> None:
            out.append({**change.as_json(), "outcome": outcome,
                        "duration_s": None if seconds is None else round(seconds, 3)})

        for rid in self.order:
            todo = list(planned.get(rid, ()))
            read = self.read.get(rid)
            left = None if read is None else list(read)
            for ran in (r for r in self.ran if r.resource == rid):
                row(ran.change, ran.outcome, ran.seconds)
                # the planned change it is (its detail may say more at apply time)
                if not _take(todo, ran.change):
                    _take(todo, ran.change, loose=True)
                if left is not None:
                    _take(left, ran.change)
            for change in todo:
                if left is None or _take(left, change):
                    row(change, "skipped", None)  # not reached, or a failure came first
                else:
                    row(change, "settled", None)
            for change in left or ():  # found by apply's read, not run
                row(change, "skipped", None)
        return out


def _take(changes: list[Change], change: Change, *, loose: bool = False) -> bool:
    """Remove the first of ``changes`` that is ``change`` (``loose``: of the same
    resource and action); whether there was one."""
    for i, c in enumerate(changes):
        if c == change or (loose and (c.resource, c.action) == (change.resource,
                                                                change.action)):
            del changes[i]
            return True
    return False


@runtime_checkable
class GroupReporter(Reporter, Protocol):
    """A reporter that shows changes running at the same time as one group (the
    terminal's); others hear ``started`` for each as it is reported."""

    def started_group(self, changes: list[Change]) -> None: ...


class NotConverged(FjordError):
    """The apply ran to its end, but some resources could not be read (and were left
    as they are, with what depends on them)."""

    def __init__(self, unreadable: list[Unreadable], skipped: list[str],
                 done: list[Change]) -> None:
        self.unreadable = unreadable
        self.done = done
        lines = [f"{u.resource}: cannot read its state: {u.reason}" for u in unreadable]
        if skipped:
            lines.append("left as they are, as they come after it: " + ", ".join(skipped))
        n = len(done)
        super().__init__(
            f"applied {n} change{'s' if n != 1 else ''}; not converged:\n" + "\n".join(lines),
            hint="fix what is said above (the rest of the host is as declared), then run "
                 "apply again")


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


@dataclass(frozen=True)
class Shown:
    """The plan the operator confirmed: apply runs what it showed, nothing else."""

    changes: tuple[Fingerprint, ...]
    # resources plan could not read: whatever they need was not shown, and is accepted
    # (the `! cannot read` lines; a daemon apply installs or starts, usually)
    unreadable: frozenset[str] = frozenset()

    @classmethod
    def of(cls, plan: Plan) -> Shown:
        return cls(tuple(c.fingerprint for c in plan.changes),
                   frozenset(u.resource for u in plan.unreadable))

    def differences(self, resource: str, now: Sequence[Change]) -> list[str]:
        """How ``now`` (the resource's changes read again) differs from what was shown:
        a change that appears or differs; one that disappeared is fine (settled)."""
        if resource in self.unreadable:
            return []
        # a resource may make changes under another's name (the hosts block, a file's)
        names = {resource, *(c.resource for c in now)}
        left = [f for f in self.changes if f.resource in names]
        new = []
        for change in now:
            if change.fingerprint in left:
                left.remove(change.fingerprint)
            else:
                new.append(change)
        out = []
        for change in new:
            was = next((f for f in left if f.action == change.action), None) or next(
                iter(left), None)
            now_text = f"{change.action} {change.detail}"
            if was is None:
                out.append(f"{resource}: not shown: {now_text}")
            elif (was.action, was.detail) == (change.action, change.detail):
                left.remove(was)
                out.append(f"{resource}: {now_text}: its diff differs from the one shown")
            else:
                left.remove(was)
                out.append(f"{resource}: shown: {was.action} {was.detail}; now: {now_text}")
        return out


class StalePlan(FjordError):
    """What apply would run is not what the operator confirmed."""

    def __init__(self, differences: list[str], done: list[Change]) -> None:
        self.done = done
        n = len(done)
        ran = (f" (applied {n} change{'s' if n != 1 else ''} before this one)" if n
               else "; nothing was changed")
        super().__init__(
            "the host changed since the plan was shown: " + "\n".join(differences) + ran
            + "; run fjord plan again",
            hint="apply again shows the new plan and asks again")


def check_shown(resources: Sequence[Resource], ctx: Context, shown: Shown) -> None:
    """Read every resource again (no cache) and refuse when a change differs from or is
    not in the shown plan. Nothing has changed yet."""
    ctx.refresh()
    differences: list[str] = []
    for r in order(resources):
        result = read_changes(r, ctx)
        if not isinstance(result, Unreadable):
            differences += shown.differences(r.id, result)
    if differences:
        raise StalePlan(differences, [])


def apply(resources: Sequence[Resource], ctx: Context, reporter: Reporter,
          journal: Journal | None = None, *, shown: Shown | None = None) -> list[Change]:
    """Run the changes; ``ctx`` is the plan's (its drivers' caches are the plan's reads,
    made under the same apply lock).

    ``shown``: the plan the operator confirmed. Every resource is read again first,
    and the apply is refused (StalePlan, nothing changed) when a change would differ
    from or not be in it. While the changes run, a resource read again right before it
    changes is held to the plan too, unless something it comes after changed in this
    run (a restart's reason becomes "written after it started", say): a change that is
    no longer needed (settled by an earlier one) is fine, one that appears or differs
    stops the apply there. Without ``shown`` (--yes), the plan is the run's own reads.

    Each resource is read again right before it is changed. What drivers cached stays
    valid until a change runs: right after one, every cache is dropped and the changed
    resource is read back from the host (it must have converged), which fills the
    caches the next resources read. So a run of resources that need nothing costs no
    new round trips, and nothing is decided on a read older than the last change.

    Neighbours marked ``concurrent`` (see Resource) run their changes together, at most
    MAX_CONCURRENT at a time; the first failure among them stops the apply once the
    others have finished. ``journal`` (if given) records what was read and run."""
    journal = journal if journal is not None else Journal()
    done: list[Change] = []
    unreadable: list[Unreadable] = []
    skip: set[str] = set()
    skipped: list[str] = []
    if shown is not None:
        check_shown(resources, ctx, shown)
    ordered = order(resources)
    journal.order = [r.id for r in ordered]
    deps = dependency_map(ordered)
    moved: set[str] = set()  # changed in this run, or after one that did
    i = 0
    while i < len(ordered):
        group = [ordered[i]]
        while (group[0].concurrent and i + len(group) < len(ordered)
               and ordered[i + len(group)].concurrent
               and ordered[i + len(group)].kind == group[0].kind):
            group.append(ordered[i + len(group)])
        i += len(group)
        read: list[tuple[Resource, list[Change]]] = []
        for r in group:
            if r.id in skip:
                skipped.append(r.id)
                continue
            result = read_changes(r, ctx)
            if isinstance(result, Unreadable):
                unreadable.append(result)
                skip |= dependents(ordered, r.id, deps)
                continue
            journal.read[r.id] = list(result)
            read.append((r, result))
        planned = [(r, changes) for r, changes in read if changes]
        if not planned:
            continue
        if shown is not None:
            differences = [d for r, changes in planned if r.id not in moved
                           for d in shown.differences(r.id, changes)]
            if differences:
                raise StalePlan(differences, done)
            for r, _ in planned:
                if r.id not in moved:
                    moved.add(r.id)
                    moved.update(dependents(ordered, r.id, deps))
        if len(planned) == 1:
            resource, changes = planned[0]
            for change in changes:
                _run(change, ctx, reporter, done, journal, resource.id)
        else:
            _run_together(planned, ctx, reporter, done, journal)
        ctx.refresh()
        for resource, _ in planned:
            left = resource.changes(ctx)  # fills the caches again, after the change
            if left:
                raise FjordError(
                    f"{resource.id} did not converge; still to do: "
                    + "; ".join(f"{c.action} {c.detail}" for c in left),
                    hint="this is a bug in fjord or something else is changing the host",
                )
    if unreadable:
        raise NotConverged(unreadable, skipped, done)
    return done


MAX_CONCURRENT = 4


def _run(change: Change, ctx: Context, reporter: Reporter, done: list[Change],
         journal: Journal, resource: str) -> None:
    reporter.started(change)
    start = time.monotonic()
    try:
        change.run(ctx)
    except BaseException as exc:
        journal.record(resource, change, False, time.monotonic() - start)
        reporter.failed(change, exc)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ApplyError(change, exc, done) from exc
    seconds = time.monotonic() - start
    journal.record(resource, change, True, seconds)
    reporter.finished(change, seconds)
    done.append(change)


def _run_together(planned: list[tuple[Resource, list[Change]]], ctx: Context,
                  reporter: Reporter, done: list[Change], journal: Journal) -> None:
    """Each resource's changes in order in a worker thread; reported from this thread
    as they finish. A KeyboardInterrupt waits for the started ones (they cannot be
    interrupted half-way safely) and starts no more."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    def work(resource: str,
             changes: list[Change]) -> list[tuple[Change, float, BaseException | None]]:
        out: list[tuple[Change, float, BaseException | None]] = []
        for change in changes:
            start = time.monotonic()
            try:
                change.run(ctx)
            except BaseException as exc:  # handed to the main thread
                out.append((change, time.monotonic() - start, exc))
                journal.record(resource, change, False, out[-1][1])
                break
            out.append((change, time.monotonic() - start, None))
            journal.record(resource, change, True, out[-1][1])
        return out

    grouped = isinstance(reporter, GroupReporter)
    changes = [c for _, cs in planned for c in cs]
    if isinstance(reporter, GroupReporter):
        reporter.started_group(changes)
    failure: tuple[Change, BaseException] | None = None
    with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT, len(planned)),
                            thread_name_prefix="fjord-apply") as pool:
        pending: set[Future[list[tuple[Change, float, BaseException | None]]]] = {
            pool.submit(work, r.id, cs) for r, cs in planned}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    for change, seconds, exc in future.result():
                        if not grouped:
                            reporter.started(change)
                        if exc is None:
                            reporter.finished(change, seconds)
                            done.append(change)
                        else:
                            reporter.failed(change, exc)
                            failure = failure or (change, exc)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failure is not None:
        change, exc = failure
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc
        raise ApplyError(change, exc, done) from exc


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
