"""Plan: every resource, in order, read now and compared with what is declared."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def make_plan(resources: Sequence[Resource], ctx: Context) -> Plan:
    plan = Plan()
    for resource in order(resources):
        result = read_changes(resource, ctx)
        if isinstance(result, Unreadable):
            plan.unreadable.append(result)
        elif result:
            plan.changes.extend(result)
        else:
            plan.unchanged.append(Unchanged(resource.id, resource.unchanged_reason(ctx)))
    plan.warnings.extend(ctx.warnings)
    return plan
