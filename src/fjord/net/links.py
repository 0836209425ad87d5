"""Links, addresses, routes and proxy neighbours through netlink (pyroute2)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from typing import Any

from fjord.engine.resource import Context, DriverKey
from fjord.errors import FjordError
from fjord.runner import run

IPInterface = Any  # IPv4Interface | IPv6Interface
NTF_PROXY = 0x08
RT_TABLE_MAIN = 254
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 0x04


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    mac: str
    up: bool
    kind: str | None


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a prefix
    gateway: str | None
    dev: str | None
    family: int


class Netlink:
    """One netlink socket for the current network namespace, opened on first use."""

    def __init__(self) -> None:
        self._ipr: Any = None
        # Reads within one plan share a dump; any change through this driver forgets it.
        self._cache: dict[Any, Any] = {}

    def _cached(self, key: Any, read: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def forget(self) -> None:
        self._cache.clear()

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # --- reading ---------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            return None
        (msg,) = self.ipr.get_links(found[0])
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return Link(name, found[0], msg.get_attr("IFLA_ADDRESS") or "",
                    bool(msg["flags"] & 1), kind)

    def index(self, name: str) -> int:
        link = self.link(name)
        if link is None:
            raise FjordError(f"no network interface named {name}")
        return link.index

    def addresses(self, name: str, *, link_local: bool = False) -> set[IPInterface]:
        link = self.link(name)
        if link is None:
            return set()
        out = set()
        for msg in self.ipr.get_addr(index=link.index):
            # IFA_LOCAL is the host's own address; IFA_ADDRESS is the peer's on a
            # point-to-point address (ifupdown's `pointopoint`, Hetzner's /32 setup)
            local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            addr = ip_interface(f"{local}/{msg['prefixlen']}")
            if addr.ip.is_link_local and not link_local:
                continue
            out.add(addr)
        return out

    def routes(self, family: int, *, dev: str | None = None) -> list[Route]:
        return [r for r in self._cached(("routes", family), lambda: self._routes(family))
                if dev is None or r.dev == dev]

    def _routes(self, family: int) -> list[Route]:
        names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in self.ipr.get_links()}
        out = []
        for msg in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            if msg["type"] != 1:  # unicast only
                continue
            dst = msg.get_attr("RTA_DST")
            oif = names.get(msg.get_attr("RTA_OIF"))
            route = Route(f"{dst}/{msg['dst_len']}" if dst else "default",
                          msg.get_attr("RTA_GATEWAY"), oif, family)
            out.append(route)
        return out

    def default_route(self, family: int) -> Route | None:
        for r in self.routes(family):
            if r.dst == "default":
                return r
        return None

    def proxy_neighbours(self, name: str) -> set[IPv6Address]:
        return set(self._cached(("proxy", name), lambda: self._proxy_neighbours(name)))

    def _proxy_neighbours(self, name: str) -> set[IPv6Address]:
        # pyroute2 0.9 filters dumps client-side and never sets NTF_PROXY in the request,
        # so the kernel does not return proxy entries: read them as iproute2's JSON.
        if self.link(name) is None:
            return set()
        import json


        out = run(["ip", "-j", "-6", "neigh", "show", "proxy", "dev", name], timeout=10)
        return {IPv6Address(entry["dst"]) for entry in json.loads(out.stdout or "[]")}

    # --- changing --------------------------------------------------------------------

    def set_up(self, name: str) -> None:
        self.forget()
        self.ipr.link("set", index=self.index(name), state="up")

    def add_address(self, name: str, addr: IPInterface) -> None:
        self.forget()
        kwargs: dict[str, Any] = {}
        if addr.version == 6:
            kwargs["flags"] = 0x80 | 0x02  # IFA_F_PERMANENT | IFA_F_NODAD: usable at once
        self.ipr.addr("replace", index=self.index(name), address=str(addr.ip),
                      prefixlen=addr.network.prefixlen, **kwargs)

    def delete_address(self, name: str, addr: IPInterface) -> None:
        self.forget()
        index = self.index(name)
        if addr.version == 4:
            # a point-to-point address is deleted with its peer (the kernel matches
            # IFA_ADDRESS against the peer)
            for msg in self.ipr.get_addr(index=index, family=socket.AF_INET):
                if msg.get_attr("IFA_LOCAL") == str(addr.ip) \
                        and msg["prefixlen"] == addr.network.prefixlen:
                    self.ipr.addr("del", index=index, local=str(addr.ip),
                                  address=msg.get_attr("IFA_ADDRESS"),
                                  prefixlen=addr.network.prefixlen)
                    return
        self.ipr.addr("del", index=index, address=str(addr.ip),
                      prefixlen=addr.network.prefixlen)

    def replace_default(self, family: int, gateway: IPv4Address | IPv6Address, dev: str,
                        *, onlink: bool = False) -> None:
        """``onlink``: the gateway is on ``dev``'s link though outside its networks (as
        `ip route … onlink`, which ifupdown writes for every default route)."""
        self.forget()
        kwargs: dict[str, Any] = {"flags": RTNH_F_ONLINK} if onlink else {}
        self.ipr.route("replace", dst="default" if family == socket.AF_INET else "::/0",
                       gateway=str(gateway), oif=self.index(dev), family=family, **kwargs)

    def delete_default(self, family: int) -> None:
        self.forget()
        route = self.default_route(family)
        if route is not None:
            self.ipr.route("del", dst="default" if family == socket.AF_INET else "::/0",
                           family=family, gateway=route.gateway,
                           oif=self.index(route.dev) if route.dev else None)

    def replace_route(self, dst: str, dev: str, *, link_scope: bool = False) -> None:
        """A route to ``dst`` on ``dev``. ``link_scope``: scope link (as `ip route add
        DST dev DEV` makes it), which a gateway behind this route needs."""
        self.forget()
        addr = ip_interface(dst)
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        kwargs: dict[str, Any] = {"scope": RT_SCOPE_LINK} if link_scope else {}
        self.ipr.route("replace", dst=str(addr.network), oif=self.index(dev), family=family,
                       **kwargs)

    def delete_route(self, dst: str, dev: str) -> None:
        self.forget()
        addr = ip_interface(dst)
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        self.ipr.route("del", dst=str(addr.network), oif=self.index(dev), family=family)

    def add_proxy(self, name: str, addr: IPv6Address) -> None:
        self.forget()
        self.ipr.neigh("replace", dst=str(addr), ifindex=self.index(name), flags=NTF_PROXY,
                       family=socket.AF_INET6)

    def delete_proxy(self, name: str, addr: IPv6Address) -> None:
        self.forget()
        self.ipr.neigh("del", dst=str(addr), ifindex=self.index(name), flags=NTF_PROXY,
                       family=socket.AF_INET6)


NETLINK: DriverKey[Netlink] = DriverKey("netlink", lambda _env: Netlink())


def driver(ctx: Context) -> Netlink:
    return ctx.open(NETLINK)


def ip(text: str) -> IPv4Address | IPv6Address:
    return ip_address(text)
