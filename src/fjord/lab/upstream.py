"""The provider side of a lab: its router, a far host "on the Internet", a DNS server.

    far netns                 upstream netns (router)                 server netns
    eth0 198.51.100.10 ── far 198.51.100.1            server 192.0.2.1/27 ── eth0
         2001:db8:ffff::10    2001:db8:ffff::1               fe80::1
                              lo: the DNS addresses (192.0.2.53, 2001:db8:53::53)

The router forwards between its ports; its port towards the server carries the
gateways of the configuration's host section and the provider profile's filter.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Interface, IPv6Interface, ip_address
from pathlib import Path
from typing import Any

from fjord.lab import namespaces, netlink, provider
from fjord.lab.enter import enter_argv
from fjord.lab.names import FAR_MAC, ROUTER_MAC, Names, netns_path
from fjord.lab.spec import FAR_GATEWAY4, FAR_GATEWAY6, FAR_IPV4, FAR_IPV6, LabSpec, far_records
from fjord.runner import Result, run

# The upstream side is "the network": its addresses are never tentative.
_NO_DAD = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
_ROUTER = {
    **_NO_DAD,
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
}


class Upstream:
    def __init__(self, names: Names, spec: LabSpec) -> None:
        self.names = names
        self.spec = spec
        self.dir = names.dir / "upstream"

    # --- creation -------------------------------------------------------------------------

    def create(self) -> None:
        """The router's and far host's links and addresses (their namespaces exist)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        namespaces.write_sysctls(self.names.netns_upstream, _ROUTER)
        namespaces.write_sysctls(self.names.netns_far, _NO_DAD)
        with netlink.rtnl(self.names.netns_upstream) as ipr:
            netlink.up(ipr, "lo")
            lo = netlink.index(ipr, "lo")
            for address in self.spec.upstream_dns:
                ip = ip_address(address)
                iface = IPv4Interface(f"{ip}/32") if ip.version == 4 else IPv6Interface(f"{ip}/128")
                netlink.add_address(ipr, lo, iface)
            far_fd = _open(self.names.netns_far)
            try:
                ipr.link("add", ifname=provider.FAR_PORT, kind="veth",
                         peer={"ifname": "eth0", "address": FAR_MAC, "net_ns_fd": far_fd})
            finally:
                os.close(far_fd)
            port = netlink.index(ipr, provider.FAR_PORT)
            netlink.add_address(ipr, port, IPv4Interface(f"{FAR_GATEWAY4}/24"))
            netlink.add_address(ipr, port, IPv6Interface(f"{FAR_GATEWAY6}/64"))
            netlink.up(ipr, provider.FAR_PORT)
        with netlink.rtnl(self.names.netns_far) as ipr:
            netlink.up(ipr, "lo")
            eth0 = netlink.up(ipr, "eth0")
            netlink.add_address(ipr, eth0, FAR_IPV4)
            netlink.add_address(ipr, eth0, FAR_IPV6)
            netlink.add_default_route(ipr, eth0, FAR_GATEWAY4)
            netlink.add_default_route(ipr, eth0, FAR_GATEWAY6)

    def attach_server(self) -> None:
        """The server's NIC: a veth whose server end has the fixed MAC, and the router's
        end with the gateways, the route to the server's /64 and the MAC filter.

        Called on `up` and after every `reboot` (the server's namespace is new then)."""
        with netlink.rtnl(self.names.netns_upstream) as ipr:
            _remove_old_port(ipr)
            server_fd = _open(self.names.netns_server)
            try:
                ipr.link("add", ifname=provider.ROUTER_PORT, kind="veth", address=ROUTER_MAC,
                         peer={"ifname": self.spec.uplink, "address": self.spec.mac,
                               "net_ns_fd": server_fd})
            finally:
                os.close(server_fd)
            port = netlink.index(ipr, provider.ROUTER_PORT)
            netlink.add_address(ipr, port, self.spec.router_ipv4)
            if self.spec.router_ipv6 is not None:
                netlink.add_address(ipr, port, self.spec.router_ipv6)
            netlink.up(ipr, provider.ROUTER_PORT)
            if self.spec.server_route4 is not None:
                # the router's own address on the link is outside the server's /32:
                # an on-link route to it, as Hetzner's router has
                netlink.replace_route4(ipr, port, self.spec.server_route4)
        # A physical NIC hands the server frames with complete checksums; a veth would
        # pass partial ones, which Open vSwitch's userspace datapath never completes
        # (TCP through the server would then fail). The router computes them instead.
        path = netns_path(self.names.netns_upstream)
        run(["nsenter", f"--net={path}", "ethtool", "--offload", provider.ROUTER_PORT,
             "tx", "off"], timeout=10)
        self.apply_provider(self.spec.provider)

    def apply_provider(self, profile: str) -> None:
        """Route the server's /64 and filter its MACs as ``profile`` says (idempotent)."""
        six = self.spec.ipv6_interface
        if six is not None:
            route = provider.ipv6_route(profile, six.network, self.spec.link_local)
            with netlink.rtnl(self.names.netns_upstream) as ipr:
                port = netlink.index(ipr, provider.ROUTER_PORT)
                netlink.replace_route6(ipr, port, route.dst, route.via)
        ruleset = provider.router_ruleset(profile, self.spec.mac, self.counter())
        self.nft(["-f", "-"], input=ruleset)

    # --- reading --------------------------------------------------------------------------

    def counter(self) -> provider.Counter:
        """Frames the router received from MACs other than the server's."""
        result = self.nft(["-j", "list", "counter", "netdev", provider.TABLE, provider.COUNTER],
                          check=False)
        if not result.ok:
            return provider.Counter()
        return provider.parse_counter(json.loads(result.stdout))

    def nft(self, args: list[str], *, input: str | None = None, check: bool = True) -> Result:
        path = netns_path(self.names.netns_upstream)
        return run(["nsenter", f"--net={path}", "nft", *args], input=input, check=check,
                   timeout=30)

    # --- the DNS server -------------------------------------------------------------------

    @property
    def dns_pidfile(self) -> Path:
        return self.dir / "dnsmasq.pid"

    @property
    def dns_log(self) -> Path:
        return self.dir / "dnsmasq.log"

    def dnsmasq_argv(self) -> list[str]:
        argv = [
            "dnsmasq",
            "--conf-file=/dev/null",       # not the machine's /etc/dnsmasq.conf
            "--no-resolv", "--no-hosts", "--no-poll",
            "--bind-interfaces",
            f"--pid-file={self.dns_pidfile}",
            f"--log-facility={self.dns_log}",
            "--log-queries",
            "--user=root",                 # reaches its log in the lab directory
        ]
        argv += [f"--listen-address={a}" for a in self.spec.upstream_dns]
        for name, addresses in far_records(self.spec):
            argv.append(f"--host-record={name},{','.join(addresses)}")
        return argv

    def start_dns(self) -> None:
        if not self.spec.upstream_dns:
            return
        run(enter_argv(self.names.lab, "upstream", self.dnsmasq_argv()), timeout=30)


def _open(netns: str) -> int:
    return os.open(netns_path(netns), os.O_RDONLY)


def _remove_old_port(ipr: Any, timeout: float = 10.0) -> None:
    """The router's end of the previous server's NIC goes away with the old server's
    namespace, which the kernel tears down in the background: delete it if it is still
    there (it may vanish under our hands) and wait until its name is free."""
    import errno
    import time

    from pyroute2.netlink.exceptions import NetlinkError

    deadline = time.monotonic() + timeout
    while True:
        found = ipr.link_lookup(ifname=provider.ROUTER_PORT)
        if not found:
            return
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"{provider.ROUTER_PORT} of the previous server is still "
                               f"there after {timeout:.0f} s")
        time.sleep(0.02)
