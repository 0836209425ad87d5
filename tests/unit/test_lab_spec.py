"""The lab's addressing from a host section, its names, and the server's initial files."""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path

import pytest

from fjord.config.desired import load
from fjord.errors import FjordError
from fjord.lab import files
from fjord.lab.names import ROUTER_MAC, Names, check_name, eui64_link_local
from fjord.lab.spec import FAR_NAME, LabSpec, far_records, from_host

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")


@pytest.fixture(scope="module")
def host():  # type: ignore[no-untyped-def]
    return load(EXAMPLE).host


@pytest.fixture
def spec(host) -> LabSpec:  # type: ignore[no-untyped-def]
    return from_host("lab", host, "bridged")


def test_names_are_derived_from_the_lab_name() -> None:
    names = Names("ci-3")
    assert names.all_netns == ("fjord-ci-3-up", "fjord-ci-3-host", "fjord-ci-3-far")
    assert names.cgroup == "fjord-lab-ci-3"
    assert names.dir.name == "ci-3"
    assert names.server_mac == Names("ci-3").server_mac  # stable
    assert names.server_mac.startswith("00:00:5e:00:53:")  # RFC 7042 documentation MACs
    assert names.server_mac != ROUTER_MAC


@pytest.mark.parametrize("bad", ["", "Lab", "1lab", "lab-", "a--b", "a" * 25, "lab/x", "l b"])
def test_bad_lab_names_are_refused(bad: str) -> None:
    with pytest.raises(FjordError, match="not a valid lab name"):
        check_name(bad)


def test_eui64_link_local_matches_the_kernels() -> None:
    # what the kernel derived for 00:00:5e:00:53:13 in a lab
    assert eui64_link_local("00:00:5e:00:53:13") == IPv6Address("fe80::200:5eff:fe00:5313")
    assert eui64_link_local("52:54:00:12:34:56") == IPv6Address("fe80::5054:ff:fe12:3456")


def test_spec_follows_the_host_section(spec: LabSpec) -> None:
    assert spec.ipv4 == "192.0.2.5/27"
    assert str(spec.router_ipv4) == "192.0.2.1/27"
    assert spec.ipv6 == "2001:db8:151:7307::2/64"
    assert str(spec.router_ipv6) == "fe80::1/64"
    assert spec.uplink == "eth0" and spec.hostname == "oslo" and spec.domain == "example.net"
    assert spec.upstream_dns == ("192.0.2.53", "2001:db8:53::53")
    assert spec.link_local == eui64_link_local(spec.mac)


def test_spec_round_trips_through_json(spec: LabSpec) -> None:
    assert LabSpec.from_json(spec.to_json()) == spec


def test_only_the_provider_may_differ_for_the_same_server(host) -> None:  # type: ignore[no-untyped-def]
    bridged, routed = from_host("lab", host, "bridged"), from_host("lab", host, "routed")
    assert bridged.same_server(routed) and bridged != routed
    other = LabSpec.from_json({**bridged.to_json(), "ipv4": "192.0.2.6/27"})
    assert not bridged.same_server(other)


def test_dns_inside_the_servers_networks_is_not_put_upstream(host) -> None:  # type: ignore[no-untyped-def]
    changed = host.model_copy(update={"dns": [host.private.address.ip, *host.dns]})
    spec = from_host("lab", changed)
    assert spec.dns[0] == "10.1.0.1"
    assert spec.upstream_dns == ("192.0.2.53", "2001:db8:53::53")


def test_unknown_provider_and_global_gateway_in_routed_mode_are_refused(host) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FjordError, match="unknown lab provider"):
        from_host("lab", host, "hetzner")
    six = host.ipv6.model_copy(update={"gateway": IPv6Address("2001:db8:151:7307::1")})
    routed_global = host.model_copy(update={"ipv6": six})
    with pytest.raises(FjordError, match="link-local IPv6 gateway"):
        from_host("lab", routed_global, "routed")
    spec = from_host("lab", routed_global, "onlink")
    assert str(spec.router_ipv6) == "2001:db8:151:7307::1/64"


def test_far_records_name_the_far_host_and_the_server(spec: LabSpec) -> None:
    assert far_records(spec) == [
        (FAR_NAME, ["198.51.100.10", "2001:db8:ffff::10"]),
        ("oslo.example.net", ["192.0.2.5", "2001:db8:151:7307::2"]),
    ]


def test_initial_interfaces_file(spec: LabSpec) -> None:
    text = files.interfaces(spec)
    assert text.endswith(
        "source /etc/network/interfaces.d/*\n"
        "\n"
        "# The loopback network interface\n"
        "auto lo\n"
        "iface lo inet loopback\n"
        "\n"
        "# The primary network interface\n"
        "auto eth0\n"
        "iface eth0 inet static\n"
        "\taddress 192.0.2.5/27\n"
        "\tgateway 192.0.2.1\n"
        "\n"
        "iface eth0 inet6 static\n"
        "\taddress 2001:db8:151:7307::2/64\n"
        "\tgateway fe80::1\n")


def test_ipv4_only_server_has_no_inet6_stanza(spec: LabSpec) -> None:
    v4 = LabSpec.from_json({**spec.to_json(), "ipv6": None, "gateway6": None})
    assert "inet6" not in files.interfaces(v4)
    assert "2001:" not in files.hosts(v4)


def test_resolver_hosts_and_hostname(spec: LabSpec) -> None:
    assert files.resolv_conf(spec) == ("search example.net\nnameserver 192.0.2.53\n"
                                       "nameserver 2001:db8:53::53\n")
    hosts = files.hosts(spec)
    assert "192.0.2.5\toslo.example.net oslo\n" in hosts
    assert "2001:db8:151:7307::2\toslo.example.net oslo\n" in hosts
    assert files.hostname(spec) == "oslo\n"
    assert set(files.server_files(spec)) == {"network/interfaces", "resolv.conf", "hosts",
                                             "hostname"}


def test_unsafe_values_never_reach_a_file(spec: LabSpec) -> None:
    evil = LabSpec.from_json({**spec.to_json(), "uplink": "eth0\n\tup rm -rf /"})
    with pytest.raises(ValueError, match="cannot be written"):
        files.interfaces(evil)


HETZNER = str(Path(__file__).resolve().parents[2] / "examples" / "hetzner-cloud.yaml")


def test_hetzner_cloud_shape_router_outside_the_servers_32() -> None:
    hetzner = load(HETZNER).host
    spec = from_host("lab", hetzner, "hetzner-cloud")
    assert spec.ipv4 == "192.0.2.10/32" and spec.onlink_gateway4
    # the router holds only the gateway's address on the link, and routes the /32 there
    assert str(spec.router_ipv4) == "203.0.113.1/32"
    assert str(spec.server_route4) == "192.0.2.10/32"
    # the installer's file is Hetzner's documented setup for it
    text = files.interfaces(spec)
    assert "\taddress 192.0.2.10/32\n\tgateway 203.0.113.1\n\tpointopoint 203.0.113.1\n" in text
    # the other shapes keep the gateway inside the server's network
    lab = from_host("lab", load(EXAMPLE).host, "bridged")
    assert lab.server_route4 is None and "pointopoint" not in files.interfaces(lab)


def test_hetzner_cloud_shape_and_the_others_refuse_each_others_gateways(host) -> None:  # type: ignore[no-untyped-def]
    hetzner = load(HETZNER).host
    with pytest.raises(FjordError, match="is outside 192.0.2.10/32") as raised:
        from_host("lab", hetzner, "routed")
    assert "--provider hetzner-cloud" in (raised.value.hint or "")
    with pytest.raises(FjordError, match="puts the IPv4 gateway outside"):
        from_host("lab", host, "hetzner-cloud")
