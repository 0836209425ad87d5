"""A change is an object: what, why, how it will run. `plan` prints the same objects
that `apply` executes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fjord.engine.context import Context

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Change:
    resource: str
    action: Action
    detail: str
    run: Callable[[Context], Any] = field(compare=False, repr=False)
    diff: str | None = field(default=None, compare=False)
    # A risky change (e.g. moving the uplink) gets the safety net of a switchover.
    risky: bool = field(default=False, compare=False)

    def as_json(self) -> dict[str, str]:
        return {"resource": self.resource, "action": self.action, "detail": self.detail}


@dataclass(frozen=True)
class Unchanged:
    """A resource that needs nothing, and why."""

    resource: str
    reason: str


@dataclass(frozen=True)
class Unreadable:
    """A resource whose actual state could not be read (no root, daemon down, …)."""

    resource: str
    reason: str
