"""Semantic rules and schema messages: each rule fires on its case, and only there."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

from fjord.config import validate
from fjord.config.loader import Document, parse
from fjord.config.models import Config
from fjord.config.problems import ConfigError, format_path
from fjord.config.validate import check

BASE: dict[str, Any] = {
    "host": {
        "fqdn": "oslo.example.net",
        "ipv4": {"address": "192.0.2.5/27", "gateway": "192.0.2.1"},
        "ipv6": {"address": "2001:db8:151:7307::2/64"},
        "dns": ["192.0.2.53"],
        "capacity": {"memory": "8GiB", "cpus": 4},
    },
    "containers": {"web": {}, "db": {}},
}


def cfg(*changes: tuple[str, Any]) -> dict[str, Any]:
    """BASE with ("a.b.c", value) changes applied; value None deletes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        check(Document(data))
    except ConfigError as exc:
        return [(format_path(p.path), p.message) for p in exc.problems]
    return []


def only(data: dict[str, Any]) -> tuple[str, str]:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


def test_base_is_valid():
    assert problems(BASE) == []


# --- host IPv4 ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["192.0.2.0/27", "192.0.2.31/27"])
def test_host_address_is_not_network_or_broadcast(address):
    assert only(cfg(("host.ipv4.address", address))) == (
        "host.ipv4.address", f"{address[:-3]} is the network or broadcast address of 192.0.2.0/27")


def test_point_to_point_31_has_no_network_or_broadcast():
    assert problems(cfg(("host.ipv4.address", "192.0.2.0/31"),
                        ("host.ipv4.gateway", "192.0.2.1"))) == []


def test_gateway_must_be_on_link():
    path, message = only(cfg(("host.ipv4.gateway", "192.0.2.33")))
    assert path == "host.ipv4.gateway"
    assert message.startswith("192.0.2.33 is not on-link: outside 192.0.2.0/27")
    assert "host.ipv4.gateway_onlink: true" in message  # names the key that allows it


def test_gateway_outside_a_32_is_on_link():
    # Hetzner Cloud: the server's address is a /32, the gateway 172.31.1.1 on the link
    assert problems(cfg(("host.ipv4.address", "192.0.2.10/32"),
                        ("host.ipv4.gateway", "172.31.1.1"))) == []


def test_gateway_outside_a_network_declared_on_link():
    assert problems(cfg(("host.ipv4.gateway", "203.0.113.1"),
                        ("host.ipv4.gateway_onlink", True))) == []


def test_gateway_of_a_32_is_not_the_host():
    assert only(cfg(("host.ipv4.address", "192.0.2.10/32"),
                    ("host.ipv4.gateway", "192.0.2.10")))[1] == \
        "192.0.2.10 is the host's own address"


def test_private_network_must_not_hold_the_on_link_gateway():
    path, message = only(cfg(("host.ipv4.address", "192.0.2.10/32"),
                             ("host.ipv4.gateway", "172.31.1.1"),
                             ("host.private", {"address": "172.31.0.1/16"})))
    assert path == "host.private.address"
    assert "holds the IPv4 gateway 172.31.1.1" in message


def test_gateway_is_not_the_host():
    assert only(cfg(("host.ipv4.gateway", "192.0.2.5")))[1] == "192.0.2.5 is the host's own address"


# --- private network ----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.1.0.1/16", "172.16.5.1/24", "192.168.0.1/24",
                                     "10.255.255.1/30"])
def test_private_ranges_are_accepted(address):
    data = cfg(("host.private", {"address": address}), ("containers", {}))
    assert problems(data) == []


@pytest.mark.parametrize("address", ["100.64.0.1/16", "127.1.0.1/16", "198.18.0.1/16",
                                     "169.254.0.1/16", "8.8.0.1/16", "172.32.0.1/16"])
def test_non_private_ranges_are_refused(address):
    path, message = only(cfg(("host.private", {"address": address}), ("containers", {})))
    assert path == "host.private.address" and "is not a private range" in message


def test_private_must_not_overlap_public():
    data = cfg(("host.ipv4", {"address": "192.168.1.5/24", "gateway": "192.168.1.1"}),
               ("host.private", {"address": "192.168.0.1/16"}), ("containers", {}))
    assert only(data) == ("host.private.address", "the private network 192.168.0.0/16 overlaps "
                          "the public network 192.168.1.0/24")


def test_private_network_too_small_or_host_on_network_address():
    assert "too small" in only(cfg(("host.private", {"address": "10.1.0.1/31"}),
                                   ("containers", {})))[1]
    assert "network or broadcast" in only(cfg(("host.private", {"address": "10.1.0.0/16"}),
                                              ("containers", {})))[1]


# --- host IPv6 ----------------------------------------------------------------------------


def test_ipv6_prefix_must_be_at_least_a_64():
    assert only(cfg(("host.ipv6.address", "2001:db8:151:7307::2/96")))[0] == "host.ipv6.address"


def test_ipv6_prefix_larger_than_a_64_is_refused_with_the_64_to_write():
    # The reference says the host's prefix is a /64 (containers' addresses, routes and
    # proxied neighbours are laid out for one); a /56 was accepted all the same.
    path, message = only(cfg(("host.ipv6.address", "2001:db8:151:7300::2/56")))
    assert path == "host.ipv6.address"
    assert "write 2001:db8:151:7300::2/64" in message
    assert problems(cfg(("host.ipv6.address", "2001:db8:151:7300::2/64"))) == []


@pytest.mark.parametrize("where", ["host.apt.suite", "containers.web.suite", "defaults.suite"])
def test_unsupported_suite_is_refused(where):
    path, message = only(cfg((where, "jessie")))
    assert path == where
    assert "not a suite fjord supports" in message and "trixie" in message


@pytest.mark.parametrize("suite", ["bookworm", "trixie", "sid", "unstable"])
def test_supported_suites_validate(suite):
    assert problems(cfg(("host.apt.suite", suite), ("containers.web.suite", suite))) == []


def test_extra_suites_stay_free_form():
    assert problems(cfg(("host.apt.extra_suites", ["testing", "bookworm-backports"]))) == []


def test_ipv6_host_address_is_not_the_anycast_address():
    assert "subnet-router anycast" in only(cfg(("host.ipv6.address",
                                                "2001:db8:151:7307::/64")))[1]


@pytest.mark.parametrize("gateway, ok", [
    ("fe80::1", True), ("fe80::dead:beef", True), ("2001:db8:151:7307::1", True),
    ("2001:db8:151:7308::1", False), ("::1", False),
])
def test_ipv6_gateway_link_local_or_in_prefix(gateway, ok):
    found = problems(cfg(("host.ipv6.gateway", gateway)))
    if ok:
        assert found == []
    else:
        assert found == [("host.ipv6.gateway", f"{gateway} is neither link-local nor inside "
                          "2001:db8:151:7307::/64")]


def test_ipv6_gateway_is_not_the_host():
    assert only(cfg(("host.ipv6.gateway", "2001:db8:151:7307::2")))[1].endswith("own address")


@pytest.mark.parametrize("provider, mode, ok", [
    ("hetzner", "bridged", False), ("ovh", "bridged", False), ("generic", "bridged", True),
    ("hetzner", "routed", True), ("hetzner", None, True),
])
def test_bridged_ipv6_is_refused_where_macs_are_filtered(provider, mode, ok):
    found = problems(cfg(("host.provider", provider), ("host.ipv6.mode", mode)))
    assert (found == []) == ok
    if not ok:
        assert found[0][0] == "host.ipv6.mode" and provider in found[0][1]


# --- switch -------------------------------------------------------------------------------


def test_bridge_names():
    assert only(cfg(("host.switch", {"external": "br0", "internal": "br0"})))[0] == \
        "host.switch.internal"
    assert only(cfg(("host.switch", {"external": "eth0"})))[0] == "host.switch.external"
    assert only(cfg(("host.switch", {"kind": "linux-bridge", "datapath": "netdev"})))[0] == \
        "host.switch.datapath"


# --- forwards -----------------------------------------------------------------------------


def fwd(*items: dict[str, Any]) -> tuple[str, Any]:
    return ("host.forwards", list(items))


def test_forward_to_unknown_container():
    assert only(cfg(fwd({"port": 80, "container": "wbe"}))) == (
        "host.forwards[0].container", "no container named 'wbe'")


def test_forward_of_the_ssh_port():
    assert only(cfg(fwd({"port": 22, "container": "web"})))[0] == "host.forwards[0].port"
    # udp/22 is not SSH; after moving SSH, tcp/22 may be forwarded
    assert problems(cfg(fwd({"port": 22, "container": "web", "protocol": "udp"}))) == []
    assert problems(cfg(("host.ssh_port", 2222), fwd({"port": 22, "container": "web"}))) == []
    assert only(cfg(("host.ssh_port", 2222), fwd({"port": 2222, "container": "web"})))[0] == \
        "host.forwards[0].port"


def test_duplicate_forwards():
    found = only(cfg(fwd({"port": 80, "container": "web"}, {"port": 443, "container": "web"},
                         {"port": 80, "container": "db", "to_port": 8080})))
    assert found == ("host.forwards[2].port", "tcp/80 is already forwarded (host.forwards[0])")
    assert problems(cfg(fwd({"port": 53, "container": "web", "protocol": "udp"},
                            {"port": 53, "container": "web", "protocol": "tcp"}))) == []


# --- containers ---------------------------------------------------------------------------


@pytest.mark.parametrize("address, message", [
    ("10.9.0.2", "10.9.0.2 is outside the private network 10.1.0.0/16"),
    ("10.1.0.0", "10.1.0.0 is the network or broadcast address of 10.1.0.0/16"),
    ("10.1.255.255", "10.1.255.255 is the network or broadcast address of 10.1.0.0/16"),
    ("10.1.0.1", "10.1.0.1 is the host's own address (the containers' gateway)"),
])
def test_container_ipv4(address, message):
    assert only(cfg(("containers.web.ipv4", address))) == ("containers.web.ipv4", message)


@pytest.mark.parametrize("address, message", [
    ("2001:db8:1::1", "is outside the host's IPv6 prefix 2001:db8:151:7307::/64"),
    ("2001:db8:151:7307::", "is the subnet-router anycast address"),
    ("2001:db8:151:7307::2", "is the host's own address"),
])
def test_container_ipv6(address, message):
    path, text = only(cfg(("containers.web.ipv6", address)))
    assert path == "containers.web.ipv6" and message in text


def test_container_ipv6_is_not_the_gateway():
    data = cfg(("host.ipv6.gateway", "2001:db8:151:7307::1"),
               ("containers.web.ipv6", "2001:db8:151:7307::1"))
    assert only(data)[1].endswith("is the IPv6 gateway (host.ipv6.gateway)")


def test_container_ipv6_with_prefix_is_accepted():
    assert problems(cfg(("containers.web.ipv6", "2001:db8:151:7307:1::7/64"))) == []


def test_container_public_values_need_host_ipv6():
    data = cfg(("host.ipv6", None), ("containers.web.ipv6", "2001:db8::7"),
               ("containers.db.mac", {"public": "52:54:00:00:00:01"}))
    assert [p for p, _ in problems(data)] == ["containers.db.mac.public", "containers.web.ipv6"]


@pytest.mark.parametrize("key, a, b", [
    ("ipv4", "10.1.0.9", "10.1.0.9"),
    ("ipv6", "2001:db8:151:7307:1::9", "2001:db8:151:7307:1:0:0:9"),  # same, written twice
])
def test_duplicate_container_addresses(key, a, b):
    data = cfg((f"containers.db.{key}", a), (f"containers.web.{key}", b))
    path, message = only(data)  # the first in the file keeps it: web
    assert path == f"containers.db.{key}"
    assert message.endswith(f"is already used by containers.web.{key}")


def test_duplicate_mac_across_interfaces_and_case():
    data = cfg(("containers.db.mac", {"public": "52:54:00:AB:CD:EF"}),
               ("containers.web.mac", {"private": "52:54:00:ab:cd:ef"}))
    assert only(data) == ("containers.db.mac.public",
                          "mac 52:54:00:ab:cd:ef is already used by containers.web.mac.private")


def test_memory_and_vcpus_against_capacity():
    assert only(cfg(("containers.web.memory", "9G"))) == (
        "containers.web.memory", "9GiB is more than the host's memory (8GiB)")
    # web sets its own (fine), db takes the default (too much): reported at the default
    assert only(cfg(("containers.web.memory", "8G"), ("defaults", {"memory": "9G"}))) == (
        "defaults.memory", "9GiB is more than the host's memory (8GiB)")
    assert only(cfg(("containers.web.vcpus", 5))) == (
        "containers.web.vcpus", "5 vCPUs is more than the host's 4 CPUs")
    assert problems(cfg(("containers.web.vcpus", 4), ("containers.web.memory", "8G"))) == []


def test_capacity_defaults_to_this_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    config = Config.model_validate(cfg(("host.capacity", None)))
    memory, cpus = validate.host_capacity(config)
    assert cpus == 3
    assert memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_container_fqdn_length_and_clash_with_host():
    long_domain = ".".join(["d" * 60] * 4)  # 243 characters
    assert only(cfg(("defaults", {"domain": long_domain}),
                    ("containers", {"abcdefghijkl": {}})))[1].startswith("the container's FQDN")
    assert only(cfg(("containers", {"oslo": {}}))) == (
        "containers.oslo", "'oslo' has the host's own FQDN")
    assert problems(cfg(("containers", {"oslo": {"domain": "other.example"}}))) == []


def test_every_problem_is_reported_at_once():
    data = cfg(("host.ipv4.gateway", "198.51.100.1"), ("containers.web.ipv4", "10.9.0.2"),
               fwd({"port": 80, "container": "nope"}))
    assert [p for p, _ in problems(data)] == [
        "containers.web.ipv4", "host.forwards[0].container", "host.ipv4.gateway"]


# --- schema messages ------------------------------------------------------------------------


def schema_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        check(parse(text))
    return [p.render() for p in exc.value.problems]


HOST = "host:\n  fqdn: h.example.net\n  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}\n"


@pytest.mark.parametrize("text, line", [
    (HOST + "  dnss: [192.0.2.53]\n",
     "host.dnss: unknown key 'dnss' (did you mean 'dns'?) (line 4, column 3)"),
    (HOST + "  dns: [192.0.2.53]\n  frobnicate: 1\n",
     "host.frobnicate: unknown key 'frobnicate'; allowed: fqdn, provider, uplink, switch, ipv4, "
     "ipv6, private, dns, ssh_port, forwards, firewall, apt, packages, capacity, check, "
     "cgroups, sysctl (line 5, column 3)"),
    ("host:\n  fqdn: h.example.net\n  dns: [192.0.2.53]\n",
     "host.ipv4: required key is missing (line 1, column 1)"),
    (HOST, "host.dns: required key is missing: DNS servers for the host and containers "
     "(line 1, column 1)"),
    (HOST + "  dns: 192.0.2.53\n",
     "host.dns: must be a list (`[a, b]`, or lines starting with `- `); got '192.0.2.53' "
     "(line 4, column 3)"),
    (HOST + "  dns: []\n", "host.dns: needs at least 1 item (line 4, column 3)"),
    (HOST + "  dns: [192.0.2.53]\n  ssh_port: '22'\n",
     "host.ssh_port: must be a whole number; got '22' (remove the quotes) (line 5, column 3)"),
    (HOST + "  dns: [192.0.2.53]\n  ssh_port: 22.5\n",
     "host.ssh_port: must be a whole number; got 22.5 (line 5, column 3)"),
    (HOST + "  dns: [192.0.2.53]\n  apt: {security: yes}\n",
     "host.apt.security: must be true or false; got 'yes' (YAML's yes/no/on/off are text "
     "here: write true or false) (line 5, column 9)"),
    (HOST + "  dns: [192.0.2.53]\n  provider: aws\n",
     "host.provider: must be one of 'generic', 'hetzner' or 'ovh'; got 'aws' (line 5, column 3)"),
    (HOST + "  dns: [192.0.2.53]\n  apt: {mirror: ftp://x}\n",
     "host.apt.mirror: 'ftp://x' is not in the expected form (a match for "
     "^https?://[A-Za-z0-9._~:/?#\\[\\]@!$&'()*+,;=%-]+$) "
     "(line 5, column 9)"),
    (HOST + "  dns: [192.0.2.53]\nhost2: {}\n",
     "host2: unknown key 'host2' (did you mean 'host'?) (line 5, column 1)"),
    (HOST + "  dns: [192.0.2.53]\n  apt: 3\n",
     "host.apt: must be a mapping (`key: value` lines); got 3 (line 5, column 3)"),
])
def test_schema_messages(text, line):
    assert line in schema_problems(text)


def test_misspelt_key_is_reported_once():
    assert schema_problems(HOST + "  dnss: [192.0.2.53]\n") == [
        "host.dnss: unknown key 'dnss' (did you mean 'dns'?) (line 4, column 3)"]


def test_schema_problems_stop_semantic_checks():
    # with a schema error there is no Config to check further: only that error
    found = schema_problems(HOST.replace("192.0.2.1", "198.51.100.1") + "  dns: 5\n")
    assert len(found) == 1 and found[0].startswith("host.dns:")


def test_problems_sort_even_when_paths_mix_indices_and_keys():
    from fjord.config.problems import Problem

    err = ConfigError([Problem(("a", "b"), "y"), Problem(("a", 0), "x"),
                       Problem(("a", 0), "x"), Problem(("z",), "w", 1, 1)])
    assert [format_path(p.path) for p in err.problems] == ["a.b", "a[0]", "z"]
    assert str(err).splitlines()[-1] == "z: w (line 1, column 1)"


def test_host_sysctl_keys_and_values():
    ok = cfg(("host.sysctl", {"net.core.somaxconn": 4096,
                              "net.ipv4.tcp_rmem": "4096 131072 6291456",
                              "vm.swappiness": "10"}))
    assert problems(ok) == []
    assert check(Document(ok)).host.sysctl["net.core.somaxconn"] == "4096"
    path, message = only(cfg(("host.sysctl", {"net/core/somaxconn": 1})))
    assert path == "host.sysctl.net/core/somaxconn" and "not a sysctl key" in message
    path, message = only(cfg(("host.sysctl", {"net.core.somaxconn": "1\nkernel.x = 1"})))
    assert path == "host.sysctl.net.core.somaxconn" and "not a sysctl value" in message
    path, message = only(cfg(("host.sysctl", {"net.core.somaxconn": True})))
    assert "got the boolean true" in message


def test_host_sysctl_refuses_what_fjord_sets_itself():
    """Declared, forwarding or proxy NDP would fight fjord's own setting (and turning
    forwarding off cuts every container off)."""
    from fjord.config.types import SYSCTL_MANAGED, SYSCTL_MANAGED_PREFIXES
    from fjord.host import sysctl

    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.proxy_ndp",
                "net.bridge.bridge-nf-call-iptables"):
        path, message = only(cfg(("host.sysctl", {key: 0})))
        assert path == f"host.sysctl.{key}" and "set by fjord itself" in message
    # every key fjord sets is in the list the validation refuses
    desired_keys = {k for k, _, _ in sysctl.wanted(_linux_bridge_ipv6())}
    assert all(k in SYSCTL_MANAGED or k.startswith(SYSCTL_MANAGED_PREFIXES)
               for k in desired_keys)


def _linux_bridge_ipv6():
    from fjord.config.desired import resolve

    data = cfg(("host.switch", {"kind": "linux-bridge"}), ("host.ipv6.mode", "routed"))
    doc = Document(data)
    return resolve(doc, check(doc))
