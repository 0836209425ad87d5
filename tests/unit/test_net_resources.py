"""Network resources: the rendered interfaces file (golden) and the plan logic above the
drivers (fake switch and netlink standing in for OVSDB and the kernel)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest
from goldens import check_golden

from fjord.config.desired import load
from fjord.engine.resource import Context
from fjord.net import interfaces, resources
from fjord.net.links import Link, Route
from fjord.net.ovs import BridgeState

GOLDEN = Path(__file__).parent / "golden" / "net"


MAC = "52:54:00:aa:bb:cc"
SOURCE = "source /etc/network/interfaces.d/*"


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


def test_interfaces_lab_ovs_netdev_routed():
    text = interfaces.render(load("examples/lab.yaml"), mac=MAC,
                             keep=[SOURCE])
    golden("interfaces.lab", text)


def test_interfaces_seed():
    text = interfaces.render(load("examples/seed.yaml"), mac=MAC)
    golden("interfaces.seed", text)
    assert "auto br-ex\nallow-ovs br-ex\n" in text and "ovs_ports eth0" in text
    assert "auto br-int\nallow-ovs br-int\n" in text
    assert "datapath_type=system" in text and "uplink-guard" not in text
    assert "source" not in text


def test_interfaces_linux_bridge(tmp_path):
    cfg = Path("examples/lab.yaml").read_text().replace("kind: ovs", "kind: linux-bridge")
    cfg = cfg.replace("datapath: netdev", "datapath: system")
    f = tmp_path / "lb.yaml"
    f.write_text(cfg)
    text = interfaces.render(load(str(f)), mac=MAC)
    golden("interfaces.linux-bridge", text)
    assert "bridge_ports eth0" in text and "ovs_" not in text
    assert f"bridge_hw {MAC}" in text and "auto br-ex" in text and "auto br-int" in text


def test_interfaces_hetzner_cloud_gateway_on_link():
    # a /32 whose gateway is outside it: ifupdown's default route is `onlink`, and the
    # host route to the gateway (scope link) is added as the switchover adds it
    text = interfaces.render(load("examples/hetzner-cloud.yaml"), mac=MAC,
                             keep=[SOURCE])
    golden("interfaces.hetzner-cloud", text)
    stanza = text[text.index("iface br-ex inet static"):text.index("iface br-ex inet6")]
    assert "address 192.0.2.10/32" in stanza and "gateway 203.0.113.1" in stanza
    assert "up ip route replace 203.0.113.1/32 dev br-ex scope link" in stanza
    lab = interfaces.render(load("examples/lab.yaml"), mac=MAC)
    assert "ip route replace" not in lab.replace("ip -6 route replace", "")


# --- fakes standing in for the drivers --------------------------------------------------


@dataclass
class FakeSwitch:
    kind: str = "ovs"
    br: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)

    def bridges(self):
        return {n: BridgeState(n, dp, mac, tuple(p for p, b in self.ports.items() if b == n))
                for n, (dp, mac) in self.br.items()}

    def port_bridge(self, port):
        return self.ports.get(port)

    def ensure_bridge(self, name, datapath_type, hwaddr):
        self.br[name] = (datapath_type, hwaddr)

    def close(self):
        pass


@dataclass
class FakeNetlink:
    links: dict = field(default_factory=dict)
    addrs: dict = field(default_factory=dict)
    routes6: list = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    proxies: set = field(default_factory=set)

    def link(self, name):
        if name not in self.links:
            return None
        return Link(name, 1, self.links[name], True, None)

    def set_up(self, name):
        pass

    def addresses(self, name, link_local=False):
        return {a for a in self.addrs.get(name, set()) if link_local or not a.ip.is_link_local}

    def add_address(self, name, addr):
        self.addrs.setdefault(name, set()).add(addr)

    def routes(self, family, dev=None):
        return [r for r in self.routes6 if dev is None or r.dev == dev]

    def replace_route(self, dst, dev):
        self.routes6.append(Route(dst, None, dev, socket.AF_INET6))

    def default_route(self, family):
        return self.defaults.get(family)

    def proxy_neighbours(self, name):
        return {a for d, a in self.proxies if d == name}

    def add_proxy(self, name, addr):
        self.proxies.add((name, addr))

    def delete_proxy(self, name, addr):
        self.proxies.discard((name, addr))

    def close(self):
        pass


@pytest.fixture
def lab_ctx():
    desired = load("examples/lab.yaml")
    ctx = Context(desired)
    ctx.drivers["ovs"] = FakeSwitch()
    ctx.drivers["netlink"] = FakeNetlink(links={"eth0": "52:54:00:aa:bb:cc"})
    return ctx


def by_kind(rs, kind):
    return [r for r in rs if r.kind == kind]


def test_bridges_created_then_converged(lab_ctx):
    rs = resources.resources(lab_ctx.desired)
    ex, internal = by_kind(rs, "bridge")
    (c,) = ex.changes(lab_ctx)
    assert c.action == "create" and "netdev" in c.detail and "52:54:00:aa:bb:cc" in c.detail
    c.run(lab_ctx)
    lab_ctx.drivers["netlink"].links["br-ex"] = "52:54:00:aa:bb:cc"
    assert ex.changes(lab_ctx) == []
    # someone changes the datapath: an update, not a re-create
    lab_ctx.drivers["ovs"].br["br-ex"] = ("system", "52:54:00:aa:bb:cc")
    (c,) = ex.changes(lab_ctx)
    assert c.action == "update" and "datapath system -> netdev" in c.detail


def test_uplink_plan_lists_the_whole_switchover_as_one_risky_change(lab_ctx):
    nl = lab_ctx.drivers["netlink"]
    nl.addrs["eth0"] = {ip_interface("192.0.2.5/27"), ip_interface("2001:db8:151:7307::2/64")}
    nl.defaults[socket.AF_INET] = Route("default", "192.0.2.1", "eth0", socket.AF_INET)
    (uplink,) = by_kind(resources.resources(lab_ctx.desired), "uplink")
    from unittest import mock

    with mock.patch("fjord.net.uplink_filter.loaded", return_value=False):
        (c,) = uplink.changes(lab_ctx)
    assert c.risky and c.action == "update"
    for part in ("eth0 into br-ex", "192.0.2.5/27", "no address on eth0",
                 "default route via 192.0.2.1 dev br-ex", "ingress guard"):
        assert part in c.detail


def test_uplink_converged(lab_ctx):
    nl, sw = lab_ctx.drivers["netlink"], lab_ctx.drivers["ovs"]
    nl.links["br-ex"] = "52:54:00:aa:bb:cc"
    sw.ports["eth0"] = "br-ex"
    nl.addrs["br-ex"] = {ip_interface("192.0.2.5/27"), ip_interface("2001:db8:151:7307::2/64")}
    nl.defaults[socket.AF_INET] = Route("default", "192.0.2.1", "br-ex", socket.AF_INET)
    nl.defaults[socket.AF_INET6] = Route("default", "fe80::1", "br-ex", socket.AF_INET6)
    (uplink,) = by_kind(resources.resources(lab_ctx.desired), "uplink")
    from unittest import mock

    with mock.patch("fjord.net.uplink_filter.loaded", return_value=True):
        assert uplink.changes(lab_ctx) == []


def test_routed_ipv6_routes_and_proxy_ndp_follow_containers(lab_ctx):
    nl = lab_ctx.drivers["netlink"]
    nl.links["br-int"] = nl.links["br-ex"] = "x"
    rs = resources.resources(lab_ctx.desired)
    (route,) = by_kind(rs, "route")
    (proxy,) = by_kind(rs, "proxy-ndp")
    for r in (route, proxy):
        (c,) = r.changes(lab_ctx)
        c.run(lab_ctx)
        assert r.changes(lab_ctx) == []
    assert ("br-ex", ip_address("2001:db8:151:7307:1::1")) in nl.proxies
    # an entry for a container that no longer exists is removed; foreign prefixes are not
    nl.proxies |= {("br-ex", ip_address("2001:db8:151:7307:1::9")),
                   ("br-ex", ip_address("2001:db8:ffff::1"))}
    (cleanup,) = by_kind(rs, "proxy-ndp-cleanup")
    (c,) = cleanup.changes(lab_ctx)
    assert c.action == "delete" and "1::9" in c.detail
    c.run(lab_ctx)
    assert cleanup.changes(lab_ctx) == []
    assert ("br-ex", ip_address("2001:db8:ffff::1")) in nl.proxies


def test_interfaces_file_takes_the_uplinks_mac_and_keeps_source_lines(lab_ctx, tmp_path):
    (f,) = [r for r in resources.resources(lab_ctx.desired)
            if isinstance(r, resources.InterfacesFile)]
    assert f.after == (resources.Uplink,)
    f.path = tmp_path / "interfaces"
    f.path.write_text("auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n"
                      "auto eth0\niface eth0 inet static\n    address 192.0.2.5/27\n")
    (c,) = f.changes(lab_ctx)
    assert c.action == "update" and "+auto br-ex" in c.diff
    f.path.write_bytes(f.content)  # what the change writes (without the chown to root)
    text = f.path.read_text()
    assert "other_config:hwaddr=52:54:00:aa:bb:cc" in text
    assert text.endswith("source /etc/network/interfaces.d/*\n")
    # the kept line is read back from fjord's own file: no rewrite (as non-root, only
    # the owner would differ)
    assert [c.diff for c in f.changes(lab_ctx) if c.diff] == []
    # the uplink gets another MAC (a new NIC): the file follows
    lab_ctx.drivers["netlink"].links["eth0"] = "52:54:00:00:00:01"
    (c,) = f.changes(lab_ctx)
    assert "-    ovs_extra" in c.diff and "hwaddr=52:54:00:00:00:01" in c.diff


def test_a_kept_file_that_declares_the_uplink_too_is_a_warning(lab_ctx, tmp_path):
    (f,) = [r for r in resources.resources(lab_ctx.desired)
            if isinstance(r, resources.InterfacesFile)]
    f.path = tmp_path / "interfaces"
    f.path.write_text("source interfaces.d/*\nauto eth0\niface eth0 inet dhcp\n")
    f.changes(lab_ctx)
    assert lab_ctx.warnings == []
    (tmp_path / "interfaces.d").mkdir()
    (tmp_path / "interfaces.d" / "50-cloud-init").write_text("auto eth0\niface eth0 inet dhcp\n")
    f.changes(lab_ctx)
    (warning,) = lab_ctx.warnings
    assert "50-cloud-init" in warning and "also declares eth0" in warning


def test_the_switchover_records_what_a_boot_with_the_new_file_raises(lab_ctx):
    (uplink,) = by_kind(resources.resources(lab_ctx.desired), "uplink")
    assert uplink.target.ifup == ("br-ex", "eth0", "br-int")


def test_bridged_mode_has_no_routes_or_proxies(tmp_path):
    cfg = Path("examples/lab.yaml").read_text().replace("mode: routed", "mode: bridged")
    f = tmp_path / "b.yaml"
    f.write_text(cfg)
    rs = resources.resources(load(str(f)))
    assert not by_kind(rs, "route") and not by_kind(rs, "proxy-ndp")
