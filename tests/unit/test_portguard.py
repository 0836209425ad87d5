"""Anti-spoofing flows of the internal bridge: what each container port may send, built
from typed values; the state file libvirt's hook rebuilds them from; the firewall's IPv6
rule bound to the sender's MAC."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from fjord.config.desired import load
from fjord.net import nft, portguard, resources, words
from fjord.net.firewall import Ruleset
from fjord.net.portguard import Flow, GuardError, Port

MAC_A = "52:54:00:95:fc:70"
A = Port("test", MAC_A, IPv4Address("10.1.0.2"),
         (IPv6Address("fe80::5054:ff:fe95:fc70"), IPv6Address("2001:db8:151:7307:1::1")))


def test_link_local_is_the_kernels_eui64():
    assert portguard.link_local(MAC_A) == IPv6Address("fe80::5054:ff:fe95:fc70")
    assert portguard.link_local("02:00:00:00:00:01") == IPv6Address("fe80::ff:fe00:1")


def test_a_port_sends_only_from_its_mac_and_addresses():
    flows = [f.text() for f in portguard.port_flows(A, 7)]
    allowed = [f for f in flows if f.endswith("actions=NORMAL")]
    # every allowed flow is tied to the port and its MAC
    assert allowed and all(",in_port=7,dl_src=52:54:00:95:fc:70," in f for f in allowed)
    assert ("cookie=0xf10d,priority=300,arp,in_port=7,dl_src=52:54:00:95:fc:70,"
            "arp_spa=10.1.0.2,arp_sha=52:54:00:95:fc:70 actions=NORMAL") in flows
    assert any("ip,in_port=7" in f and "nw_src=10.1.0.2 " in f for f in allowed)
    for src in ("fe80::5054:ff:fe95:fc70", "2001:db8:151:7307:1::1"):
        assert any(f"ipv6,in_port=7,dl_src={MAC_A},ipv6_src={src} " in f for f in allowed)
    # neighbour advertisements only for its own targets, with its MAC or none
    targets = {f.split("nd_target=")[1].split(",")[0] for f in allowed if "nd_target=" in f}
    assert targets == {"fe80::5054:ff:fe95:fc70", "2001:db8:151:7307:1::1"}
    assert all(f"nd_tll={MAC_A}" in f or "nd_tll=00:00:00:00:00:00" in f
               for f in allowed if "icmp_type=136" in f)
    # duplicate address detection from ::
    assert any("ipv6_src=::,icmp_type=135,nd_sll=00:00:00:00:00:00" in f for f in allowed)
    # any other neighbour discovery, router advertisements, redirects, and the rest: dropped
    for kind in (134, 135, 136, 137):
        assert f"cookie=0xf10d,priority=310,icmp6,in_port=7,icmp_type={kind} actions=drop" in flows
    assert "cookie=0xf10d,priority=200,in_port=7 actions=drop" in flows
    assert all(f.priority > portguard.PORT_DENY for f in portguard.port_flows(A, 7)
               if f.action == "NORMAL")


def test_the_table_guards_ports_that_exist_and_keeps_normal_for_the_rest():
    b = Port("web", "52:54:00:64:ea:6d", IPv4Address("10.1.0.3"), ())
    flows = portguard.table([A, b], {MAC_A: 3})
    assert flows[-1] == Flow(0, (), "NORMAL")
    assert flows[-1].text() == "cookie=0x0,priority=0 actions=NORMAL"  # the bridge's own
    assert all("in_port=3," in f.text() or "in_port=3 " in f.text() for f in flows[:-1])
    assert portguard.table([A, b], {}) == [Flow(0, (), "NORMAL")]


@pytest.mark.parametrize("flow", [
    Flow(300, (("dl_src", "52:54:00:95:fc:70,actions=drop"),), "NORMAL"),
    Flow(300, (("nw_src", "10.1.0.2"),), "NORMAL"),          # text, not an address
    Flow(300, (("ipv6_src", IPv4Address("10.1.0.2")),), "NORMAL"),
    Flow(300, (("in_port", "7"),), "NORMAL"),
    Flow(300, (("in_port", True),), "NORMAL"),
    Flow(300, (("actions", 1),), "NORMAL"),
    Flow(300, (("arp", "x"),), "NORMAL"),
    Flow(300, (), "output:1"),
    Flow(70000, (), "drop"),
])
def test_the_builder_refuses_anything_but_typed_values(flow):
    with pytest.raises((ValueError, TypeError)):
        flow.text()


def test_names_and_macs_are_checked():
    with pytest.raises(ValueError):
        portguard.mac("52:54:00:95:fc")
    with pytest.raises(ValueError):
        portguard.bridge_name("br-int br-ex")
    assert portguard.mac("52:54:00:AA:BB:CC") == "52:54:00:aa:bb:cc"


def test_the_state_file_round_trips_and_a_broken_one_is_an_error(tmp_path: Path):
    assert portguard.read_state(tmp_path) is None
    portguard.state_path(tmp_path).write_text(portguard.render_state("br-int", [A]))
    assert portguard.read_state(tmp_path) == ("br-int", [A])
    data = json.loads(portguard.state_path(tmp_path).read_text())
    data["ports"][0]["ipv4"] = "2001:db8::1"
    portguard.state_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(GuardError):
        portguard.read_state(tmp_path)
    portguard.state_path(tmp_path).write_text("{")
    with pytest.raises(GuardError):
        portguard.read_state(tmp_path)


def _lab(tmp_path: Path, mode: str):
    text = Path("examples/lab.yaml").read_text().replace("mode: routed", f"mode: {mode}")
    text += "  web: {ipv4: 10.1.0.3, ipv6: '2001:db8:151:7307:1::2'}\n"
    path = tmp_path / f"{mode}.yaml"
    path.write_text(text)
    return load(str(path))


def test_routed_ports_may_send_their_public_address_bridged_ones_only_link_local(tmp_path):
    routed = {p.container: p for p in resources.guarded_ports(_lab(tmp_path, "routed"))}
    bridged = {p.container: p for p in resources.guarded_ports(_lab(tmp_path, "bridged"))}
    assert set(routed) == {"test", "web"}
    for name, port in routed.items():
        assert port.ipv6[0] == portguard.link_local(port.mac)
        assert len(port.ipv6) == 2 and port.ipv6[1] == _lab(tmp_path, "routed").container(name).ipv6
        assert bridged[name].ipv6 == port.ipv6[:1]
    ids = [r.id for r in resources.resources(_lab(tmp_path, "routed"))]
    assert "flows br-int" in ids
    assert any(i.startswith("port-guard-state ") for i in ids)


def test_the_firewall_ties_each_public_ipv6_source_to_its_containers_mac(tmp_path):
    rs = Ruleset.from_desired(_lab(tmp_path, "routed"))
    text = rs.render()
    d = _lab(tmp_path, "routed")
    pairs = ", ".join(f"{c.mac_private} . {c.ipv6}" for c in
                      sorted(d.containers, key=lambda c: (c.mac_private, str(c.ipv6))))
    assert (f'iifname "br-int" ether saddr . ip6 saddr {{ {pairs} }} accept') in text
    assert 'iifname "br-int" ip6 saddr' not in text


def test_nft_mac_and_concatenations():
    assert words.mac("52:54:00:AA:bb:cc") == "52:54:00:aa:bb:cc"
    with pytest.raises(ValueError):
        words.mac('52:54:00:aa:bb:cc" accept')
    assert nft.concatenation_set([("a", "b")]) == "{ a . b }"
    with pytest.raises(ValueError):
        nft.concatenation_set([])
