"""`fjord lab`: options, the default configuration, and the status text."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fjord.commands import lab as cli


def test_group_has_the_contracted_commands() -> None:
    assert set(cli.lab.commands) == {"up", "down", "status", "reboot", "exec", "upstream"}
    result = CliRunner().invoke(cli.lab, ["up", "--help"])
    assert result.exit_code == 0
    for option in ("-c, --config", "--name", "--provider [bridged|routed|onlink|hetzner-cloud]"):
        assert option in result.output


def test_default_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FJORD_CONFIG", "/srv/x.yaml")
    assert cli.default_config() == "/srv/x.yaml"
    monkeypatch.delenv("FJORD_CONFIG")
    assert cli.default_config() == str(Path(__file__).resolve().parents[2] /
                                       "examples" / "lab.yaml")


def test_exec_needs_a_command() -> None:
    result = CliRunner().invoke(cli.lab, ["exec", "--name", "x"])
    assert result.exit_code == 2


def test_status_text() -> None:
    report = {
        "name": "ci", "state": "up", "problems": [], "dir": "/var/lib/fjord-labs/ci",
        "provider": "routed", "provider_description": "only the server's MAC accepted",
        "foreign_mac": {"packets": 7, "bytes": 412, "action": "drop"},
        "netns": {"server": "fjord-ci-host", "upstream": "fjord-ci-up", "far": "fjord-ci-far"},
        "server": {"fqdn": "oslo.example.net", "uplink": "eth0", "mac": "00:00:5e:00:53:13",
                   "holder": 42, "daemons": {"ovsdb-server": 43, "libvirtd": None},
                   "addresses": [{"ifname": "eth0", "address": "192.0.2.5", "prefixlen": 27}],
                   "routes": [{"dst": "default", "gateway": "192.0.2.1", "ifname": "eth0"}]},
        "upstream": {"gateway4": "192.0.2.1", "gateway6": "fe80::1", "dns": ["192.0.2.53"],
                     "dnsmasq": 44, "far": {"name": "far.example.org",
                                            "ipv4": "198.51.100.10",
                                            "ipv6": "2001:db8:ffff::10"}},
        "last_boot": {"ok": False, "steps": [{"step": "networking", "ok": False}]},
    }
    text = "\n".join(cli.render_status(report))
    assert "foreign-MAC frames dropped: 7 (412 bytes)" in text
    assert "default via 192.0.2.1 dev eth0" in text
    assert "ovsdb-server 43, libvirtd stopped" in text
    assert "last boot FAILED: networking" in text
    assert cli.render_status({"name": "ci", "state": "absent"}) == ["lab ci: absent"]
