"""libvirt's LXC driver through libvirt-python: one connection, opened on first use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fjord.containers.offload import LXC_RUN, init_pid  # noqa: F401 (used here, re-exported)
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, DriverKey
from fjord.environment import DEFAULT_LIBVIRT_URI, current
from fjord.errors import FjordError

DEFAULT_URI = DEFAULT_LIBVIRT_URI
# Where libvirt's LXC driver keeps the controller's PID of a running container.


@dataclass(frozen=True)
class DomainState:
    name: str
    uuid: str
    running: bool
    autostart: bool
    xml: str


def _libvirt() -> Any:
    import libvirt

    # libvirt prints every error to stderr by default; fjord reports them itself.
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt


class Libvirt:
    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or current().libvirt_uri
        self._conn: Any = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            lv = _libvirt()
            try:
                self._conn = lv.open(self.uri)
            except lv.libvirtError as exc:
                raise StateUnreadable(
                    f"cannot connect to libvirt ({self.uri}): {exc.get_error_message()}",
                    hint="is libvirtd running? (fjord apply starts it)") from exc
        return self._conn

    def forget(self) -> None:
        """Before apply reads a resource: reconnect, libvirtd may have been restarted
        meanwhile (isAlive() does not notice a daemon that went away: measured)."""
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _lookup(self, name: str) -> Any | None:
        lv = _libvirt()
        try:
            return self.conn.lookupByName(name)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return None
            raise FjordError(f"libvirt: {exc.get_error_message()}") from exc

    def domain(self, name: str) -> DomainState | None:
        dom = self._lookup(name)
        if dom is None:
            return None
        return DomainState(name, dom.UUIDString(), bool(dom.isActive()),
                           bool(dom.autostart()), dom.XMLDesc(0))

    def names(self) -> list[str]:
        return sorted(d.name() for d in self.conn.listAllDomains(0))

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        lv = _libvirt()
        try:
            return fn(*args)
        except lv.libvirtError as exc:
            raise FjordError(f"libvirt: {what}: {exc.get_error_message()}",
                             hint="see /var/log/libvirt/lxc/NAME.log") from exc

    def define(self, xml: str) -> None:
        self._call("define", self.conn.defineXML, xml)

    def _dom(self, name: str) -> Any:
        dom = self._lookup(name)
        if dom is None:
            raise FjordError(f"no container named {name} is defined")
        return dom

    def start(self, name: str) -> None:
        self._call(f"start {name}", self._dom(name).create)

    def set_autostart(self, name: str, on: bool) -> None:
        self._call(f"autostart {name}", self._dom(name).setAutostart, 1 if on else 0)

    def shutdown(self, name: str) -> None:
        self._call(f"shut down {name}", self._dom(name).shutdown)

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom.isActive():
            self._call(f"stop {name}", dom.destroy)

    def undefine(self, name: str) -> None:
        dom = self._lookup(name)
        if dom is not None:
            self._call(f"undefine {name}", dom.undefine)

    def set_memory_live(self, name: str, kib: int) -> None:
        lv = _libvirt()
        self._call(f"memory of {name}", self._dom(name).setMemoryFlags, kib,
                   lv.VIR_DOMAIN_AFFECT_LIVE)

    def set_shares_live(self, name: str, shares: int) -> None:
        lv = _libvirt()
        self._call(f"CPU shares of {name}", self._dom(name).setSchedulerParametersFlags,
                   {"cpu_shares": shares}, lv.VIR_DOMAIN_AFFECT_LIVE)

    def memory_usage(self, name: str) -> int | None:
        """Bytes the running container uses, as its memory cgroup counts them."""
        dom = self._lookup(name)
        if dom is None or not dom.isActive():
            return None
        try:
            stats = dom.memoryStats()
        except _libvirt().libvirtError:
            return None
        used = stats.get("rss") or stats.get("actual")
        return int(used) * 1024 if used else None


LIBVIRT: DriverKey[Libvirt] = DriverKey("libvirt", lambda env: Libvirt(env.libvirt_uri))


def driver(ctx: Context) -> Libvirt:
    return ctx.open(LIBVIRT)


