"""A change is an object: what, why, how it will run. `plan` prints the same objects
that `apply` executes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fjord.engine.resource import Context

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

    @property
    def fingerprint(self) -> Fingerprint:
        """What the change is, as shown: its resource, action, summary and diff (never the
        function that runs it). Equal fingerprints: the same change."""
        diff = hashlib.sha256(self.diff.encode()).hexdigest()[:16] if self.diff else ""
        return Fingerprint(self.resource, self.action, self.detail, diff)


@dataclass(frozen=True)
class Fingerprint:
    """A change as plan showed it (saved plans hold these)."""

    resource: str
    action: str
    detail: str
    diff: str = ""  # a hash of the diff plan -v shows, "" without one

    def as_json(self) -> dict[str, str]:
        return {"resource": self.resource, "action": self.action, "detail": self.detail,
                "diff": self.diff}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Fingerprint:
        return cls(str(data["resource"]), str(data["action"]), str(data["detail"]),
                   str(data.get("diff", "")))


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
