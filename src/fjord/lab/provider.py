"""How the simulated provider treats the server's uplink.

- ``bridged``: any source MAC is accepted; the server's IPv6 /64 is on-link on the
  router (the router resolves every address of it with neighbour discovery).
- ``routed``: like Hetzner: only frames from the server NIC's own MAC are accepted
  (others are dropped and counted), and the /64 is routed to the server's link-local
  address, so container addresses need no neighbour discovery on the uplink.
- ``onlink``: only the server's MAC is accepted (dropped and counted otherwise), and the
  /64 is on-link: the server must answer neighbour solicitations for its containers'
  addresses itself (proxy NDP).
- ``hetzner-cloud``: like ``routed``, and the server's IPv4 is a /32 whose gateway is
  outside it (Hetzner Cloud's 172.31.1.1): the router has only the gateway's address
  (a /32) on the server's link and an on-link host route to the server's address; the
  installer leaves ifupdown's `pointopoint` setup that Hetzner documents.

In every profile frames from other MACs are counted (``foreign_mac``); ``bridged``
just lets them through. The filter is an nftables ``netdev`` ingress chain on the
router's port towards the server, so nothing in the server can see or change it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from fjord.errors import FjordError

PROVIDERS = ("bridged", "routed", "onlink", "hetzner-cloud")
# Profiles whose IPv4 gateway is outside the server's network (a /32, the gateway on-link).
ONLINK_GATEWAY = frozenset({"hetzner-cloud"})
DEFAULT_PROVIDER = "bridged"

# The router's ports (names inside the upstream namespace only).
ROUTER_PORT = "server"
FAR_PORT = "far"

TABLE = "fjord_lab"
COUNTER = "foreign_mac"
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")

DESCRIPTIONS = {
    "bridged": "any MAC accepted, /64 on-link",
    "routed": "only the server's MAC accepted, /64 routed to the server's link-local address",
    "onlink": "only the server's MAC accepted, /64 on-link (the server must proxy NDP)",
    "hetzner-cloud": "only the server's MAC accepted, /64 routed to the server's link-local "
                     "address, IPv4 a /32 with the gateway on-link outside it",
}


def check_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise FjordError(f"unknown lab provider {provider!r}",
                         hint=f"use one of: {', '.join(PROVIDERS)}")
    return provider


def filters_mac(provider: str) -> bool:
    return check_provider(provider) != "bridged"


@dataclass(frozen=True)
class Route6:
    """The router's route towards the server's IPv6 network."""

    dst: IPv6Network
    via: IPv6Address | None  # None: on-link


def ipv6_route(provider: str, network: IPv6Network, server_link_local: IPv6Address) -> Route6:
    if check_provider(provider) in ("routed", "hetzner-cloud"):
        return Route6(network, server_link_local)
    return Route6(network, None)


@dataclass(frozen=True)
class Counter:
    packets: int = 0
    bytes: int = 0


def router_ruleset(provider: str, server_mac: str, counter: Counter = Counter()) -> str:
    """The router's nftables table, replacing any previous one atomically.

    ``counter`` carries the foreign-MAC count over (a provider change or a server
    reboot does not reset what the provider has seen)."""
    mac = server_mac.lower()
    if not _MAC.match(mac):
        raise ValueError(f"{server_mac!r} is not a MAC address")
    verdict = " drop" if filters_mac(provider) else ""
    return (
        f"table netdev {TABLE}\n"
        f"delete table netdev {TABLE}\n"
        f"table netdev {TABLE} {{\n"
        f"\tcounter {COUNTER} {{\n"
        f"\t\tpackets {int(counter.packets)} bytes {int(counter.bytes)}\n"
        f"\t}}\n"
        f"\tchain {ROUTER_PORT}_ingress {{\n"
        f'\t\ttype filter hook ingress device "{ROUTER_PORT}" priority filter; policy accept;\n'
        f'\t\tether saddr != {mac} counter name "{COUNTER}"{verdict}\n'
        f"\t}}\n"
        f"}}\n"
    )


def parse_counter(nft_json: dict[str, object]) -> Counter:
    """The foreign-MAC counter from `nft -j list counter netdev fjord_lab foreign_mac`."""
    items = nft_json.get("nftables", [])
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("counter"), dict):
                c = item["counter"]
                if c.get("name") == COUNTER:
                    return Counter(int(c.get("packets", 0)), int(c.get("bytes", 0)))
    return Counter()
