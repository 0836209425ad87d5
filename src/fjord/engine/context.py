"""What resources share during one plan or apply: the desired state, the environment,
the run's drivers and options. Below both :mod:`fjord.engine.change` (a change runs with
a context) and :mod:`fjord.engine.resource`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from fjord.environment import Environment, current

if TYPE_CHECKING:
    from fjord.config.desired import Desired


@runtime_checkable
class Forgets(Protocol):
    """A driver that caches what it read: after a change, apply makes it forget."""

    def forget(self) -> None: ...


@runtime_checkable
class Closes(Protocol):
    """A driver holding a connection or a socket, closed when the run ends."""

    def close(self) -> None: ...


D = TypeVar("D")


@dataclass(frozen=True)
class DriverKey(Generic[D]):
    """How a layer names its driver and opens it from the run's environment: e.g.
    ``NETLINK = DriverKey("netlink", lambda env: Netlink())`` in fjord.net.links.
    ``ctx.drivers.get(NETLINK)`` is then a ``Netlink`` (typed), opened once per run."""

    name: str
    open: Callable[[Environment], D]


class Drivers:
    """The drivers of one plan or apply (OVSDB, netlink, libvirt, nft, the service and
    package managers...), each opened on first use, from the environment, and shared by
    every resource of the run. Tests hand in fakes by name (``drivers["netlink"] =``)."""

    def __init__(self, opened: Mapping[str, Any] | None = None) -> None:
        self._open: dict[str, Any] = dict(opened or {})

    def get(self, key: DriverKey[D], env: Environment) -> D:
        if key.name not in self._open:
            self._open[key.name] = key.open(env)
        driver: D = self._open[key.name]
        return driver

    def __getitem__(self, name: str) -> Any:
        return self._open[name]

    def __setitem__(self, name: str, driver: Any) -> None:
        self._open[name] = driver

    def __contains__(self, name: object) -> bool:
        return name in self._open

    def update(self, drivers: Mapping[str, Any]) -> None:
        self._open.update(drivers)

    def values(self) -> list[Any]:
        return list(self._open.values())

    def forget(self) -> None:
        for driver in self._open.values():
            if isinstance(driver, Forgets):
                driver.forget()

    def close(self) -> None:
        for driver in reversed(self.values()):
            if isinstance(driver, Closes):
                try:
                    driver.close()
                except Exception:
                    pass
        self._open.clear()


@dataclass(frozen=True)
class Options:
    """How the command asked for this plan or apply."""

    only: frozenset[str] | None = None  # --only: these layers
    prune: bool = False                 # --prune: containers gone from the file go
    confirm_timeout: float | None = None  # --confirm-timeout of a switchover
    # the terminal's "confirm within SECONDS" prompt of a switchover (apply), or None
    confirm_prompt: Callable[[float], None] | None = None
    commands: bool = False  # plan -v: keep the commands each resource's read ran


@dataclass
class Context:
    """What resources share during one plan or apply: the desired state, drivers, options.

    Drivers (OVSDB, netlink, libvirt connections) are opened lazily and closed at the end,
    so that `plan` of a file works without root as far as it can.
    """

    desired: Desired
    drivers: Drivers = field(default_factory=Drivers)
    options: Options = field(default_factory=Options)
    warnings: list[str] = field(default_factory=list)
    # where this run works and what it talks to (built at the command-line edge)
    env: Environment = field(default_factory=current)
    # How a long change reports how far it is (what, fraction done, stage): the apply's
    # reporter sets it (the command that shows the progress owns the console; a
    # resource never opens one). By default, nobody is told.
    progress: Callable[[str, float, str], None] = field(default=lambda what, f, stage: None,
                                                        repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.drivers, Drivers):  # a mapping of fakes, from a test
            self.drivers = Drivers(self.drivers)

    def warn(self, message: str) -> None:
        """Something the operator should know (shown by plan, status and check)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def open(self, key: DriverKey[D]) -> D:
        """The run's driver ``key`` (opened from ``env`` on first use)."""
        return self.drivers.get(key, self.env)

    def driver(self, name: str, factory: Callable[[], D]) -> D:
        """A driver without a key of its own (tests): opened by ``factory()``."""
        return self.drivers.get(DriverKey(name, lambda _env: factory()), self.env)

    def refresh(self) -> None:
        """Forget what drivers cached: after a change, the next read asks the host."""
        self.drivers.forget()

    def close(self) -> None:
        self.drivers.close()
