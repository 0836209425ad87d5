"""A change is an object: what, why, how it will run. `plan` prints the same objects
that `apply` executes."""

from __future__ import annotations

import hashlib
import re
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
    # What `plan -v` shows: a unified diff, or a function computing one (called only
    # when a diff is shown, so that a plain plan reads no more than it needs).
    diff: str | Callable[[], str | None] | None = field(default=None, compare=False)
    # A risky change (e.g. moving the uplink) gets the safety net of a switchover.
    risky: bool = field(default=False, compare=False)

    def as_json(self) -> dict[str, str]:
        return {"resource": self.resource, "action": self.action, "detail": self.detail}

    def diff_text(self) -> str | None:
        """The diff, computed now if it is a function (None or "": nothing to show)."""
        if callable(self.diff):
            return self.diff() or None
        return self.diff or None

    @property
    def headline(self) -> str:
        """The change in one phrase, for people: the detail alone when it names the
        resource already (``write /etc/hosts``, not ``file /etc/hosts  write
        /etc/hosts``), else the resource, a colon, the detail."""
        return about(self.resource, self.detail)

    @property
    def fingerprint(self) -> Fingerprint:
        """What the change is, as shown: its resource, action, summary and diff (never the
        function that runs it). Equal fingerprints: the same change. A diff computed only
        for plan -v (a function: the nft table's, the domain's) is not part of it: its
        summary is."""
        text = self.diff if isinstance(self.diff, str) else None
        diff = hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""
        return Fingerprint(self.resource, self.action, self.detail, diff)


def about(resource: str, text: str) -> str:
    """``text`` alone when it names ``resource``, else ``resource: text``."""
    return text if _names(text, resource) else f"{resource}: {text}"


def _names(detail: str, resource: str) -> bool:
    """Whether ``detail`` names ``resource``: its name (what follows the kind) or the
    last word of it appears in the detail as a word of its own."""
    words = resource.split()
    candidates = {" ".join(words[1:]), words[-1]} if len(words) > 1 else set(words)
    return any(re.search(rf"(?<![\w/.-]){re.escape(c)}(?![\w/-]|\.\w)", detail)
               for c in candidates if c)


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
