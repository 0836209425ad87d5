"""Open vSwitch through OVSDB (ovsdbapp): each logical change is one transaction, and
ovsdbapp waits until ovs-vswitchd has applied it (next_cfg), as ovs-vsctl does."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, DriverKey
from fjord.environment import DEFAULT_OVSDB, current
from fjord.errors import FjordError

log = logging.getLogger("fjord.ovs")

DB_SOCKET = DEFAULT_OVSDB


@dataclass(frozen=True)
class BridgeState:
    name: str
    datapath_type: str
    hwaddr: str | None
    ports: tuple[str, ...] = field(default_factory=tuple)


class Ovs:
    """A connection to the local ovsdb-server, opened on first use."""

    kind = "ovs"  # as a fjord.net.switch.Switch

    def __init__(self, socket: str | None = None, timeout: float = 10.0) -> None:
        self.socket = socket or current().ovsdb_socket
        self.timeout = timeout
        self._api: Any = None
        self._conn: Any = None

    @property
    def api(self) -> Any:
        if self._api is None:
            if not os.path.exists(self.socket):
                raise StateUnreadable(
                    f"Open vSwitch is not running (no {self.socket})",
                    hint="install and start openvswitch-switch (fjord apply does it)",
                )
            if not os.access(self.socket, os.R_OK | os.W_OK):
                raise StateUnreadable(f"no access to {self.socket} (needs root)")
            from ovsdbapp.backend.ovs_idl import connection
            from ovsdbapp.schema.open_vswitch import impl_idl

            try:
                idl = connection.OvsdbIdl.from_server(f"unix:{self.socket}", "Open_vSwitch")
                self._conn = connection.Connection(idl=idl, timeout=self.timeout)
                self._api = impl_idl.OvsdbIdl(self._conn)
            except Exception as exc:
                raise StateUnreadable(f"cannot connect to ovsdb-server: {exc}") from exc
        return self._api

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.stop()
            finally:
                self._conn = None
                self._api = None

    def bridges(self) -> dict[str, BridgeState]:
        out = {}
        for row in self.api.tables["Bridge"].rows.values():
            ports = tuple(sorted(p.name for p in row.ports if p.name != row.name))
            other = dict(row.other_config)
            out[row.name] = BridgeState(
                row.name, row.datapath_type or "system", other.get("hwaddr"), ports
            )
        return out

    def port_bridge(self, port: str) -> str | None:
        for row in self.api.tables["Bridge"].rows.values():
            if any(p.name == port for p in row.ports):
                return str(row.name)
        return None

    def _commit(self, what: str, commands: list[Any]) -> None:
        try:
            with self.api.transaction(check_error=True) as txn:
                for command in commands:
                    txn.add(command)
        except FjordError:
            raise
        except Exception as exc:
            raise FjordError(f"Open vSwitch: {what} failed: {exc}",
                             hint="see ovs-vswitchd's log (/var/log/openvswitch)") from exc

    def ensure_bridge(self, name: str, datapath_type: str, hwaddr: str | None) -> None:
        api = self.api
        exists = name in self.bridges()
        commands = [api.add_br(name, may_exist=True, datapath_type=datapath_type)]
        if exists:
            commands.append(api.db_set("Bridge", name, ("datapath_type", datapath_type)))
        if hwaddr:
            commands.append(api.db_set("Bridge", name, ("other_config", {"hwaddr": hwaddr})))
        elif exists:
            commands.append(api.db_remove("Bridge", name, "other_config", "hwaddr",
                                          if_exists=True))
        self._commit(f"bridge {name}", commands)

    def delete_bridge(self, name: str) -> None:
        self._commit(f"delete bridge {name}", [self.api.del_br(name, if_exists=True)])

    def add_port(self, bridge: str, port: str) -> None:
        self._commit(f"add {port} to {bridge}", [self.api.add_port(bridge, port, may_exist=True)])

    def delete_port(self, port: str, bridge: str | None = None) -> None:
        self._commit(f"remove port {port}", [self.api.del_port(port, bridge, if_exists=True)])


# One OVSDB connection per run: the Open vSwitch switch (fjord.net.switch) is this one.
OVS: DriverKey[Ovs] = DriverKey("ovs", lambda env: Ovs(env.ovsdb_socket))


def driver(ctx: Context) -> Ovs:
    return ctx.open(OVS)
