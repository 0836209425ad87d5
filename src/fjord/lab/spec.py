"""The lab's addressing, derived once from the configuration's host section.

A LabSpec is plain, immutable data: the server's initial NIC configuration (as the
provider's installer leaves it), the provider router's gateways, the far host "on the
Internet", and the DNS server. Everything that creates the lab reads it from here, and
it is stored in the lab directory so that `reboot` and `status` never re-read the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from typing import TYPE_CHECKING, Any

from fjord.errors import FjordError
from fjord.lab.names import Names, eui64_link_local
from fjord.lab.provider import ONLINK_GATEWAY, check_provider

if TYPE_CHECKING:  # pydantic's models cost 0.1 s to import: only `up` needs them
    from fjord.config.models import Host

# "The Internet" as seen from the lab: a far host and its router-side addresses.
FAR_NAME = "far.example.org"
FAR_IPV4 = IPv4Interface("198.51.100.10/24")
FAR_IPV6 = IPv6Interface("2001:db8:ffff::10/64")
FAR_GATEWAY4 = IPv4Address("198.51.100.1")
FAR_GATEWAY6 = IPv6Address("2001:db8:ffff::1")


@dataclass(frozen=True)
class LabSpec:
    name: str
    provider: str
    fqdn: str
    uplink: str
    mac: str
    ipv4: str                  # the server's address with prefix, e.g. 192.0.2.5/27
    gateway4: str
    ipv6: str | None           # e.g. 2001:db8:151:7307::2/64
    gateway6: str | None       # e.g. fe80::1
    dns: tuple[str, ...]       # every resolver of host.dns, in order (for resolv.conf)
    upstream_dns: tuple[str, ...]  # those the upstream serves (outside the server's networks)

    # --- derived --------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.fqdn.partition(".")[0]

    @property
    def domain(self) -> str:
        return self.fqdn.partition(".")[2]

    @property
    def ipv4_interface(self) -> IPv4Interface:
        return IPv4Interface(self.ipv4)

    @property
    def ipv6_interface(self) -> IPv6Interface | None:
        return IPv6Interface(self.ipv6) if self.ipv6 else None

    @property
    def link_local(self) -> IPv6Address:
        """The server NIC's link-local address (EUI-64 of its fixed MAC)."""
        return eui64_link_local(self.mac)

    @property
    def onlink_gateway4(self) -> bool:
        """The gateway is outside the server's network (Hetzner Cloud's /32 shape)."""
        return IPv4Address(self.gateway4) not in self.ipv4_interface.network

    @property
    def router_ipv4(self) -> IPv4Interface:
        """The gateway with the prefix of the server's network, on the router's side; a
        /32 when it is outside that network (the router then routes the server's
        address to the link, see server_route4)."""
        if self.onlink_gateway4:
            return IPv4Interface(f"{self.gateway4}/32")
        return IPv4Interface(f"{self.gateway4}/{self.ipv4_interface.network.prefixlen}")

    @property
    def server_route4(self) -> IPv4Network | None:
        """The router's on-link route to the server's network when its own address on
        the link is outside it (as Hetzner's router has for each /32)."""
        return self.ipv4_interface.network if self.onlink_gateway4 else None

    @property
    def router_ipv6(self) -> IPv6Interface | None:
        if self.gateway6 is None or self.ipv6_interface is None:
            return None
        gw = IPv6Address(self.gateway6)
        prefix = 64 if gw.is_link_local else self.ipv6_interface.network.prefixlen
        return IPv6Interface(f"{gw}/{prefix}")

    # --- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dns"] = list(self.dns)
        data["upstream_dns"] = list(self.upstream_dns)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabSpec:
        fields = dict(data)
        fields["dns"] = tuple(fields.get("dns", ()))
        fields["upstream_dns"] = tuple(fields.get("upstream_dns", ()))
        return cls(**fields)

    def same_server(self, other: LabSpec) -> bool:
        """True when only the provider differs (the server side is identical)."""
        mine, theirs = self.to_json(), other.to_json()
        mine.pop("provider")
        theirs.pop("provider")
        return json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)


def from_host(name: str, host: Host, provider: str = "bridged") -> LabSpec:
    """The lab for ``host``; raises FjordError when the lab cannot simulate it."""
    check_provider(provider)
    names = Names(name)
    v4 = host.ipv4.address
    outside = host.ipv4.gateway not in v4.network
    if outside and provider not in ONLINK_GATEWAY:
        raise FjordError(f"host.ipv4.gateway {host.ipv4.gateway} is outside {v4.network}",
                         hint="the lab puts the gateway inside the server's network, except "
                              "with --provider hetzner-cloud (a /32, the gateway on-link)")
    if not outside and provider in ONLINK_GATEWAY:
        raise FjordError(f"the {provider} provider puts the IPv4 gateway outside the "
                         f"server's network, and {host.ipv4.gateway} is inside {v4.network}",
                         hint="give the server a /32 (host.ipv4.address: A/32) and a gateway "
                              "outside it, or use another --provider")
    own: list[IPv4Network | IPv6Network] = [v4.network, host.private.address.network]
    ipv6 = gateway6 = None
    if host.ipv6 is not None:
        ipv6 = str(host.ipv6.address)
        gateway6 = str(host.ipv6.gateway)
        own.append(host.ipv6.address.network)
        if provider in ("routed", "hetzner-cloud") and not host.ipv6.gateway.is_link_local:
            raise FjordError(
                f"the routed provider needs a link-local IPv6 gateway, not {gateway6}",
                hint="use gateway fe80::1 (as Hetzner does) or --provider bridged|onlink")
    for far in (FAR_IPV4.network, FAR_IPV6.network):
        for net in own:
            if far.version == net.version and far.overlaps(net):
                raise FjordError(f"the server's network {net} overlaps the lab's far "
                                 f"network {far}", hint="use other documentation addresses")
    dns = tuple(str(a) for a in host.dns)
    upstream_dns = tuple(
        a for a in dns
        if not any(ip_address(a) in n for n in own if n.version == ip_address(a).version)
        and ip_address(a) not in (FAR_IPV4.ip, FAR_IPV6.ip)
    )
    return LabSpec(
        name=name, provider=provider, fqdn=host.fqdn, uplink=host.uplink,
        mac=names.server_mac, ipv4=str(v4), gateway4=str(host.ipv4.gateway),
        ipv6=ipv6, gateway6=gateway6, dns=dns, upstream_dns=upstream_dns,
    )


def far_records(spec: LabSpec) -> list[tuple[str, list[str]]]:
    """Names the lab's DNS server answers: the far host and the server itself."""
    server = [str(spec.ipv4_interface.ip)]
    if spec.ipv6_interface is not None:
        server.append(str(spec.ipv6_interface.ip))
    return [(FAR_NAME, [str(FAR_IPV4.ip), str(FAR_IPV6.ip)]), (spec.fqdn, server)]

