"""Bridges behind one interface: Open vSwitch (OVSDB) or Linux bridges (netlink)."""

from __future__ import annotations

from typing import Protocol

from fjord.engine.resource import Context, DriverKey
from fjord.net.links import Netlink
from fjord.net.ovs import OVS, BridgeState, Ovs


class SwitchDriver(Protocol):
    kind: str

    def bridges(self) -> dict[str, BridgeState]: ...
    def port_bridge(self, port: str) -> str | None: ...
    def ensure_bridge(self, name: str, datapath_type: str, hwaddr: str | None) -> None: ...
    def add_port(self, bridge: str, port: str) -> None: ...
    def delete_port(self, port: str, bridge: str | None = None) -> None: ...
    def close(self) -> None: ...


OvsSwitch = Ovs  # the OVSDB connection is the switch (one per run: fjord.net.ovs.OVS)


class LinuxBridgeSwitch:
    """Plain Linux bridges, for hosts without Open vSwitch."""

    kind = "linux-bridge"

    def __init__(self, netlink: Netlink | None = None) -> None:
        self.nl = netlink or Netlink()

    def close(self) -> None:
        self.nl.close()

    def bridges(self) -> dict[str, BridgeState]:
        links = list(self.nl.ipr.get_links())
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
        out: dict[str, BridgeState] = {}
        for m in links:
            info = m.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge":
                name = m.get_attr("IFLA_IFNAME")
                ports = tuple(sorted(names[p["index"]] for p in links
                                     if p.get_attr("IFLA_MASTER") == m["index"]))
                out[name] = BridgeState(name, "system", m.get_attr("IFLA_ADDRESS"), ports)
        return out

    def port_bridge(self, port: str) -> str | None:
        link = self.nl.link(port)
        if link is None:
            return None
        (msg,) = self.nl.ipr.get_links(link.index)
        master = msg.get_attr("IFLA_MASTER")
        if not master:
            return None
        (m,) = self.nl.ipr.get_links(master)
        return str(m.get_attr("IFLA_IFNAME"))

    def ensure_bridge(self, name: str, datapath_type: str, hwaddr: str | None) -> None:
        if self.nl.link(name) is None:
            self.nl.ipr.link("add", ifname=name, kind="bridge")
        if hwaddr:
            self.nl.ipr.link("set", index=self.nl.index(name), address=hwaddr)

    def add_port(self, bridge: str, port: str) -> None:
        self.nl.ipr.link("set", index=self.nl.index(port), master=self.nl.index(bridge))

    def delete_port(self, port: str, bridge: str | None = None) -> None:
        if self.nl.link(port) is not None:
            self.nl.ipr.link("set", index=self.nl.index(port), master=0)


LINUX_BRIDGE: DriverKey[LinuxBridgeSwitch] = DriverKey(
    "linux-bridge", lambda _env: LinuxBridgeSwitch())


def driver(ctx: Context) -> SwitchDriver:
    if ctx.desired.host.switch.kind == "ovs":
        return ctx.open(OVS)
    return ctx.open(LINUX_BRIDGE)
