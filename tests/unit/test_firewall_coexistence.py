"""Other firewalls on the host, read from captured `nft -j list ruleset` output.

The fixtures were captured from real rule sets (Docker's and ufw's through iptables-nft)
loaded in a throwaway network namespace: tests/unit/golden/firewall/capture.sh."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from told import tell

from fjord.engine.resource import Context
from fjord.net.firewall import Firewall, ForeignBlock, Ruleset, foreign_blocks

GOLDEN = Path(__file__).parent / "golden" / "firewall"

LAB = Ruleset(IPv4Address("192.0.2.5"), IPv4Network("10.1.0.0/16"), "br-ex", "br-int")
LAB6 = Ruleset(IPv4Address("192.0.2.5"), IPv4Network("10.1.0.0/16"), "br-ex", "br-int",
               containers6=(IPv6Address("2001:db8:151:7307:1::1"),))


def captured(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


def test_docker_forward_policy_drop_is_reported_with_the_docker_fix() -> None:
    [block] = foreign_blocks(captured("docker"), LAB)
    assert (block.family, block.table, block.chain) == ("ip", "filter", "FORWARD")
    assert block.docker and not block.by_rule
    message = block.message()
    assert "table ip filter, chain FORWARD has policy drop on hook forward" in message
    assert "iptables -I DOCKER-USER -i br-int -j ACCEPT" in message
    assert "iptables -I DOCKER-USER -o br-int -j ACCEPT" in message
    assert "docs/firewall.md" in message


def test_docker_with_the_fix_applied_is_quiet() -> None:
    # DOCKER-USER (jumped to first from FORWARD) accepts br-int both ways.
    assert foreign_blocks(captured("docker-fixed"), LAB) == []


def test_ufw_default_forward_policy_is_reported_with_the_ufw_fix() -> None:
    [block] = foreign_blocks(captured("ufw"), LAB)
    assert block.ufw and "ufw route allow in on br-int" in block.fix()


def test_a_rule_dropping_the_internal_bridge_is_reported_even_under_policy_accept() -> None:
    [block] = foreign_blocks(captured("drop-rule"), LAB)
    assert block.by_rule and block.reason == "has a rule that drops traffic of br-int"
    assert "nft -a list chain ip filter FORWARD" in block.fix()


def test_an_unconditional_reject_counts_like_a_drop_policy() -> None:
    [block] = foreign_blocks(captured("firewalld"), LAB)
    assert (block.family, block.table, block.chain) == ("inet", "firewalld", "filter_FORWARD")
    assert block.reason == "has a rule that rejects all forwarded traffic"
    assert "nft insert rule inet firewalld filter_FORWARD iifname br-int accept" in block.fix()


def test_fjords_own_table_is_never_reported() -> None:
    data = captured("clean")
    assert any(i.get("chain", {}).get("policy") == "drop" for i in data["nftables"])
    assert foreign_blocks(data, LAB) == []


def test_docker_drops_nothing_of_an_other_bridge_name() -> None:
    # Docker's own drop rules name docker0 only; fjord's bridges elsewhere are not hit by
    # them, but the policy still is.
    other = Ruleset(LAB.public, LAB.private, "ex0", "int0")
    [block] = foreign_blocks(captured("docker"), other)
    assert "int0" in block.fix() and not block.by_rule


def chain(fam: str, table: str, name: str, policy: str = "drop", **extra: Any) -> dict[str, Any]:
    return {"chain": {"family": fam, "table": table, "name": name, "handle": 1,
                      "type": "filter", "hook": "forward", "prio": 0, "policy": policy,
                      **extra}}


def rule(fam: str, table: str, chain_name: str, *expr: Any) -> dict[str, Any]:
    return {"rule": {"family": fam, "table": table, "chain": chain_name, "handle": 9,
                     "expr": list(expr)}}


def iface(key: str, name: str, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": name}}


def test_ip6_tables_matter_only_when_containers_have_ipv6() -> None:
    data = {"nftables": [chain("ip6", "filter", "FORWARD")]}
    assert foreign_blocks(data, LAB) == []
    [block] = foreign_blocks(data, LAB6)
    assert block.family == "ip6"


def test_an_accept_for_one_direction_only_is_not_enough() -> None:
    data = {"nftables": [
        chain("ip", "filter", "FORWARD"),
        rule("ip", "filter", "FORWARD", iface("iifname", "br-int"), {"accept": None}),
    ]}
    assert len(foreign_blocks(data, LAB)) == 1
    data["nftables"].append(
        rule("ip", "filter", "FORWARD", iface("oifname", "br-int"), {"accept": None}))
    assert foreign_blocks(data, LAB) == []


def test_an_accept_guarded_by_another_condition_does_not_count() -> None:
    ct = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}}
    data = {"nftables": [
        chain("ip", "filter", "FORWARD"),
        rule("ip", "filter", "FORWARD", iface("iifname", "br-int"), ct, {"accept": None}),
        rule("ip", "filter", "FORWARD", iface("oifname", "br-int"), {"accept": None}),
    ]}
    assert len(foreign_blocks(data, LAB)) == 1


def test_a_drop_inside_a_conditional_jump_is_not_taken_for_everything() -> None:
    data = {"nftables": [
        chain("ip", "filter", "FORWARD", policy="accept"),
        {"chain": {"family": "ip", "table": "filter", "name": "OTHER", "handle": 2}},
        rule("ip", "filter", "FORWARD", iface("iifname", "docker0"),
             {"jump": {"target": "OTHER"}}),
        rule("ip", "filter", "OTHER", {"drop": None}),
    ]}
    assert foreign_blocks(data, LAB) == []


def test_a_return_ends_the_jumped_chain() -> None:
    data = {"nftables": [
        chain("ip", "filter", "FORWARD", policy="accept"),
        {"chain": {"family": "ip", "table": "filter", "name": "USER", "handle": 2}},
        rule("ip", "filter", "FORWARD", {"jump": {"target": "USER"}}),
        rule("ip", "filter", "USER", {"return": None}),
        rule("ip", "filter", "USER", {"drop": None}),
    ]}
    assert foreign_blocks(data, LAB) == []


def test_jump_loops_do_not_hang() -> None:
    data = {"nftables": [
        chain("ip", "filter", "FORWARD"),
        {"chain": {"family": "ip", "table": "filter", "name": "A", "handle": 2}},
        rule("ip", "filter", "FORWARD", {"jump": {"target": "A"}}),
        rule("ip", "filter", "A", {"jump": {"target": "A"}}),
    ]}
    assert len(foreign_blocks(data, LAB)) == 1


@pytest.mark.parametrize("junk", [{}, {"nftables": None}, {"nftables": [1, "x", {"rule": 3}]},
                                  {"nftables": [{"chain": {"hook": "forward"}}]}])
def test_unexpected_json_is_ignored_not_fatal(junk: dict[str, Any]) -> None:
    assert foreign_blocks(junk, LAB) == []


class _Nft:
    def __init__(self, ruleset: dict[str, Any]) -> None:
        self._ruleset = ruleset

    def list_table(self, fam: str, name: str) -> str | None:
        return None

    def ruleset(self) -> dict[str, Any]:
        return self._ruleset


def test_the_plan_carries_the_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    ctx = Context(desired=None)  # type: ignore[arg-type]
    ctx.drivers["nft"] = _Nft(captured("docker"))
    Firewall(LAB).changes(ctx)
    assert len(ctx.warnings) == 1 and "DOCKER-USER" in ctx.warnings[0]


def test_block_message_is_one_line() -> None:
    block = ForeignBlock("ip", "filter", "FORWARD", "has policy drop on hook forward", "br-int")
    assert "\n" not in block.message()
