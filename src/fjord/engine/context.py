"""What resources share during one plan or apply. Below both :mod:`fjord.engine.change`
(a change runs with a context) and :mod:`fjord.engine.resource`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    # How a long change reports how far it is (what, fraction done, stage): the apply's
    # reporter sets it (the command that shows the progress owns the console; a
    # resource never opens one). By default, nobody is told.
    progress: Callable[[str, float, str], None] = field(default=lambda what, f, stage: None,
                                                        repr=False)

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
