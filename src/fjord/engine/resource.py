"""The resource protocol."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fjord.engine.change import Change
from fjord.engine.order import Ref

if TYPE_CHECKING:
    from fjord.config.desired import Desired


@dataclass
class Context:
    """What resources share during one plan or apply: the desired state, drivers, options.

    Drivers (OVSDB, netlink, libvirt connections) are opened lazily and closed at the end,
    so that `plan` of a file works without root as far as it can.
    """

    desired: Desired
    drivers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Something the operator should know (shown by plan, status and check)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def driver(self, name: str, factory: Any) -> Any:
        if name not in self.drivers:
            self.drivers[name] = factory()
        return self.drivers[name]

    def refresh(self) -> None:
        """Forget what drivers cached: after a change, the next read asks the host."""
        for drv in self.drivers.values():
            forget = getattr(drv, "forget", None)
            if forget is not None:
                forget()

    def close(self) -> None:
        for drv in reversed(list(self.drivers.values())):
            close = getattr(drv, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
        self.drivers.clear()


# Every kind of the Resource classes of fjord defined so far (fjord.resources.registry()
# imports them all): what ``after`` may name with none of it here (engine/order.py).
KINDS: set[str] = set()


class Resource(ABC):
    """One thing on the host: reads its actual state, compares, yields changes.

    ``changes`` must be "ensure" logic: called again after its changes ran, it returns
    nothing. ``after`` names what must converge first: kinds (Resource classes) or
    resources (``Ref(Kind, name)``); an id or a kind's name as a string still works.
    Every reference must resolve (see fjord.engine.order).
    """

    kind: str = "resource"
    after: Sequence[str | Ref | type[Resource]] = ()
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
