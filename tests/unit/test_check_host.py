"""The host part of `fjord check` says what it checked and what it could not (issue 15,
item 6): no silent skip of the containers' IPv4 test, no claim about IPv6 forwarding on
an IPv4-only host."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fjord import check as chk
from fjord.config.desired import Desired, load
from fjord.host import sysctl


def _desired(tmp_path: Path, *, dns: str | None = None, ipv6: bool = True,
             check: bool = True) -> Desired:
    text = Path("examples/lab.yaml").read_text()
    if dns is not None:
        text = re.sub(r"  dns:\n(    - .*\n)+", f"  dns:\n    - {dns}\n", text)
    if not ipv6:
        text = re.sub(r"  ipv6:\n(    .*\n)+", "", text)
        text = re.sub(r"    ipv6: .*\n", "", text)
    if not check:
        text = re.sub(r"  check:.*\n(    .*\n)+", "", text)
    path = tmp_path / "fjord.yaml"
    path.write_text(text)
    return load(str(path))


@pytest.fixture
def host_probes(monkeypatch):
    """The host's checks without a host: gateways answer, the firewall is loaded, the
    network is as declared; the kernel settings are what ``values`` says."""
    values: dict[str, str] = {}
    monkeypatch.setattr(chk, "ping", lambda *a, **k: (True, "2 packets transmitted"))
    monkeypatch.setattr(chk, "_firewall", lambda: (True, "table inet fjord is loaded"))
    monkeypatch.setattr(chk, "_declared", lambda desired: iter(()))
    monkeypatch.setattr(sysctl.Sysctl, "read", lambda self: values.get(self.key, "1"))
    return values


def _results(desired: Desired) -> dict[str, chk.CheckResult]:
    return {r.name: r for r in chk.host_checks(desired)}


def test_no_ipv4_target_is_a_line_that_says_why(tmp_path, host_probes):
    desired = _desired(tmp_path, dns="2001:db8:53::53", check=False)
    results = _results(desired)
    r = results["containers: reach the outside over IPv4 (NAT)"]
    assert not r.ok
    assert "host.dns has no IPv4 server and host.check.ipv4 is not set" in r.detail
    assert "containers: reach the outside over IPv6" not in results


def test_no_ipv6_target_is_a_line_that_says_why(tmp_path, host_probes):
    desired = _desired(tmp_path, dns="192.0.2.53", check=False)
    r = _results(desired)["containers: reach the outside over IPv6"]
    assert not r.ok and "host.check.ipv6 is not set" in r.detail


def test_targets_from_host_check_or_dns_leave_no_line(tmp_path, host_probes):
    for desired in (_desired(tmp_path, dns="2001:db8:53::53"), _desired(tmp_path)):
        assert not [n for n in _results(desired) if n.startswith("containers:")]


def test_no_containers_nothing_is_skipped(tmp_path, host_probes):
    desired = _desired(tmp_path, dns="2001:db8:53::53", check=False)
    desired = replace(desired, containers=())
    assert not [n for n in _results(desired) if n.startswith("containers:")]


def test_an_ipv4_only_host_is_not_said_to_forward_ipv6(tmp_path, host_probes):
    host_probes["net.ipv6.conf.all.forwarding"] = "0"
    desired = _desired(tmp_path, ipv6=False)
    assert desired.host.ipv6 is None
    r = _results(desired)["host: forwarding enabled"]
    assert r.ok
    assert "IPv4 forwarding on" in r.detail and "IPv6" not in r.detail


def test_a_dual_stack_host_says_each_setting_it_checked(tmp_path, host_probes):
    r = _results(_desired(tmp_path))["host: forwarding enabled"]
    assert r.ok
    assert r.detail == ("IPv4 forwarding on, ARP answered only where the address is, "
                        "IPv6 forwarding on, proxy NDP on")
    host_probes["net.ipv6.conf.all.forwarding"] = "0"
    r = _results(_desired(tmp_path))["host: forwarding enabled"]
    assert not r.ok and r.detail == "net.ipv6.conf.all.forwarding is 0 (want 1)"
