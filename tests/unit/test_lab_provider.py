"""Provider profiles: the router's MAC filter and the route to the server's /64."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest

from fjord.errors import FjordError
from fjord.lab import provider
from fjord.lab.provider import Counter, ipv6_route, parse_counter, router_ruleset

MAC = "00:00:5e:00:53:13"
NET = IPv6Network("2001:db8:151:7307::/64")
LL = IPv6Address("fe80::200:5eff:fe00:5313")


def test_routed_routes_the_prefix_to_the_link_local_address() -> None:
    assert ipv6_route("routed", NET, LL) == provider.Route6(NET, LL)
    assert ipv6_route("bridged", NET, LL) == provider.Route6(NET, None)
    assert ipv6_route("onlink", NET, LL) == provider.Route6(NET, None)


def test_filtering_profiles_drop_other_macs_and_all_count_them() -> None:
    routed = router_ruleset("routed", MAC)
    assert f'ether saddr != {MAC} counter name "foreign_mac" drop' in routed
    assert 'device "server"' in routed
    bridged = router_ruleset("bridged", MAC)
    assert f'ether saddr != {MAC} counter name "foreign_mac"\n' in bridged
    assert "drop" not in bridged
    assert provider.filters_mac("onlink") and not provider.filters_mac("bridged")


def test_ruleset_replaces_the_table_atomically_and_keeps_the_count() -> None:
    text = router_ruleset("onlink", MAC.upper(), Counter(7, 420))
    lines = text.splitlines()
    assert lines[:3] == ["table netdev fjord_lab", "delete table netdev fjord_lab",
                         "table netdev fjord_lab {"]
    assert "\t\tpackets 7 bytes 420" in lines
    assert MAC in text  # lower-cased


def test_ruleset_refuses_what_is_not_a_mac() -> None:
    with pytest.raises(ValueError):
        router_ruleset("routed", 'x" ; flush ruleset ; "')


def test_unknown_profile() -> None:
    with pytest.raises(FjordError, match="unknown lab provider") as raised:
        provider.check_provider("hetzner")
    assert raised.value.hint == "use one of: bridged, routed, onlink, hetzner-cloud"


def test_counter_from_nft_json() -> None:
    # `nft -j list counter netdev fjord_lab foreign_mac`, captured in a lab
    captured = {"nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                      "json_schema_version": 1}},
        {"counter": {"family": "netdev", "name": "foreign_mac", "table": "fjord_lab",
                     "handle": 1, "packets": 8, "bytes": 440}}]}
    assert parse_counter(captured) == Counter(8, 440)
    assert parse_counter({"nftables": []}) == Counter()
