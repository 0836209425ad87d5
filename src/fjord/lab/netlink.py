"""Small netlink helpers (pyroute2) for the lab's namespaces."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Any

from fjord.lab.namespaces import inside

IFA_F_NODAD = 0x02


@contextlib.contextmanager
def rtnl(netns: str) -> Iterator[Any]:
    """An IPRoute whose socket lives in ``netns`` (the caller stays where it is)."""
    from pyroute2 import IPRoute

    with inside(netns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return int(found[0])


def up(ipr: Any, ifname: str) -> int:
    idx = index(ipr, ifname)
    ipr.link("set", index=idx, state="up")
    return idx


def add_address(ipr: Any, idx: int, iface: IPv4Interface | IPv6Interface,
                *, nodad: bool = True, peer: IPv4Address | None = None) -> None:
    """Add an address; IPv6 ones without duplicate address detection by default (the
    simulated provider side has been up for long, its addresses are not tentative).
    ``peer``: a point-to-point address (`ip addr add A/32 peer P`, ifupdown's
    `pointopoint P`): the kernel then routes P on the link."""
    kwargs: dict[str, Any] = {}
    if iface.version == 6 and nodad:
        kwargs["flags"] = IFA_F_NODAD
    if peer is not None:
        ipr.addr("add", index=idx, local=str(iface.ip), address=str(peer),
                 prefixlen=iface.network.prefixlen, **kwargs)
        return
    ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen,
             **kwargs)


def add_default_route(ipr: Any, idx: int, gateway: IPv4Address | IPv6Address,
                      *, onlink: bool = False) -> None:
    if gateway.version == 4:
        kwargs: dict[str, Any] = {"flags": 0x04} if onlink else {}  # RTNH_F_ONLINK
        ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=idx, **kwargs)
    else:
        ipr.route("add", dst="::/0", gateway=str(gateway), oif=idx, family=socket.AF_INET6)


def replace_route6(ipr: Any, idx: int, dst: IPv6Network, via: IPv6Address | None) -> None:
    kwargs: dict[str, Any] = {"dst": str(dst), "oif": idx, "family": socket.AF_INET6}
    if via is not None:
        kwargs["gateway"] = str(via)
    ipr.route("replace", **kwargs)


def replace_route4(ipr: Any, idx: int, dst: IPv4Network) -> None:
    """An on-link IPv4 route (scope link, as `ip route replace DST dev DEV` makes it)."""
    ipr.route("replace", dst=str(dst), oif=idx, scope=253)


def addresses(ipr: Any) -> list[dict[str, Any]]:
    """Addresses as {ifname, address, prefixlen, family}, for status and tests."""
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    out = []
    for a in ipr.get_addr():
        out.append({"ifname": names.get(a["index"]), "address": a.get("address"),
                    "prefixlen": a["prefixlen"], "family": 6 if a["family"] == 10 else 4})
    return out


def routes(ipr: Any) -> list[dict[str, Any]]:
    """Main-table routes as {dst, gateway, ifname, family}."""
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for r in ipr.get_routes(family=family, table=254):
            dst = r.get("dst")
            out.append({
                "dst": f"{dst}/{r['dst_len']}" if dst else "default",
                "gateway": r.get("gateway"),
                "ifname": names.get(r.get("oif")),
                "family": 6 if family == socket.AF_INET6 else 4,
            })
    return out
