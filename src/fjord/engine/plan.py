"""Plan: every resource, in order, read now and compared with what is declared."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from fjord.engine.change import Change, Unchanged, Unreadable
from fjord.engine.order import order
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError

log = logging.getLogger("fjord.plan")


class StateUnreadable(FjordError):
    """Raised by a resource that cannot read its actual state (permissions, daemon down)."""


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    unchanged: list[Unchanged] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # With ctx.options.commands (plan -v): the commands each resource's read ran,
    # by the resource of its changes and by resource id (shown under the change).
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Each resource's changes, by resource id (what apply --json matches outcomes to).
    by_resource: dict[str, list[Change]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"changes": [c.as_json() for c in self.changes]}
        if self.unreadable:
            out["unreadable"] = [
                {"resource": u.resource, "reason": u.reason} for u in self.unreadable
            ]
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def read_changes(resource: Resource, ctx: Context) -> list[Change] | Unreadable:
    try:
        return resource.changes(ctx)
    except StateUnreadable as exc:
        return Unreadable(resource.id, exc.message)
    except PermissionError as exc:
        return Unreadable(resource.id, f"permission denied: {exc.filename or exc}")


class _Commands(logging.Handler):
    """Collects the ``run: …`` lines of fjord.run (runner.prepare) while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("run: "):
            self.lines.append(message[len("run: "):])


@contextmanager
def _collecting(enabled: bool) -> Iterator[_Commands | None]:
    """While reading one resource: its commands, kept for the plan (and not also logged
    on stderr, where they would come before the plan in a block of their own)."""
    if not enabled:
        yield None
        return
    run_log = logging.getLogger("fjord.run")
    handler = _Commands()
    level, propagate = run_log.level, run_log.propagate
    run_log.addHandler(handler)
    run_log.setLevel(logging.DEBUG)
    run_log.propagate = False
    try:
        yield handler
    finally:
        run_log.removeHandler(handler)
        run_log.setLevel(level)
        run_log.propagate = propagate


def make_plan(resources: Sequence[Resource], ctx: Context) -> Plan:
    plan = Plan()
    collect = bool(ctx.options.commands)
    for resource in order(resources):
        with _collecting(collect) as commands:
            result = read_changes(resource, ctx)
        if commands is not None and commands.lines:
            plan.commands[resource.id] = commands.lines
            for change in result if isinstance(result, list) else ():
                plan.commands.setdefault(change.resource, commands.lines)
        if isinstance(result, Unreadable):
            plan.unreadable.append(result)
        elif result:
            plan.changes.extend(result)
            plan.by_resource[resource.id] = list(result)
        else:
            plan.unchanged.append(Unchanged(resource.id, resource.unchanged_reason(ctx)))
    plan.warnings.extend(ctx.warnings)
    return plan
