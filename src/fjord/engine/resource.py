"""The resource protocol."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from fjord.engine.change import Change
from fjord.engine.context import (
    Closes,
    Context,
    DriverKey,
    Drivers,
    Forgets,
    Options,
)
from fjord.engine.order import KINDS, Ref, Reference

__all__ = ["Closes", "Context", "DriverKey", "Drivers", "Forgets", "Options", "Ref", "Reference",
           "Resource"]


class Resource(ABC):
    """One thing on the host: reads its actual state, compares, yields changes.

    ``changes`` must be "ensure" logic: called again after its changes ran, it returns
    nothing. ``after`` names what must converge first: kinds (Resource classes) or
    resources (the objects, or ``Ref(Kind, name)`` where they are made elsewhere); a
    string is refused. Every reference must resolve (see fjord.engine.order).
    """

    kind: str = "resource"
    after: Sequence[Reference] = ()
    # Neighbours in the apply order of the same kind that are all ``concurrent`` have
    # their changes run at the same time (each resource's own changes still in order):
    # for independent, mostly waiting work such as starting containers. Such a resource
    # must not depend on another of its kind, and its changes must be thread-safe.
    concurrent: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("fjord.") and "kind" in cls.__dict__:
            KINDS.add(cls.kind)

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def id(self) -> str:
        return f"{self.kind} {self.name}"

    @abstractmethod
    def changes(self, ctx: Context) -> list[Change]:
        """Read the actual state and return what must change (empty: converged)."""

    def unchanged_reason(self, ctx: Context) -> str:
        """Why nothing changes (shown by `plan -v`)."""
        return "as declared"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"
