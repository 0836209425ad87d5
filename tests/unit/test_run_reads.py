"""What the drivers read once per run (a plan, or an apply until its first change): nft's
table listings and ruleset, dpkg's installed packages, a unit's state. A change through
the driver, or ``forget()`` (apply, after any change), makes the next read ask again.
Also: the port guard's OpenFlow ports from one ovs-vsctl."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host import packages
from fjord.host.services import SystemdManager
from fjord.net import nft, portguard, uplink_filter
from fjord.runner import Result


class Recorder:
    """A runner answering by the command's first words; each command line kept."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str], **kw: Any) -> Result:
        line = " ".join(argv)
        self.calls.append(line)
        key = next(k for k in self.answers if line.startswith(k))
        rc, out, err = self.answers[key]
        if rc and kw.get("check", True):
            raise FjordError(f"failed: {line}")
        return Result(list(argv), rc, out, err, 0.0)


TABLE = "table inet fjord {\n}\n"
RULESET = {"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "fjord"}},
                        {"table": {"family": "netdev", "name": "fjord-uplink"}}]}


def nft_runner(monkeypatch: pytest.MonkeyPatch, **extra: tuple[int, str, str]) -> Recorder:
    run = Recorder({"nft -s list table inet fjord": (0, TABLE, ""),
                    "nft -s list table": (1, "", "Error: No such file or directory\n"),
                    "nft -j list ruleset": (0, json.dumps(RULESET), ""),
                    "nft -c -f -": (0, "", ""), "nft -f -": (0, "", ""), **extra})
    monkeypatch.setattr(nft.runner, "run", run)
    return run


def test_nft_reads_once_per_run_and_again_after_a_load(monkeypatch: pytest.MonkeyPatch):
    run = nft_runner(monkeypatch)
    driver = nft.Nft()
    for _ in range(3):
        assert driver.list_table("inet", "fjord") == TABLE
        assert driver.list_table("ip", "fjord") is None
        assert nft.has_table(driver.ruleset(), "netdev", "fjord-uplink")
    assert run.calls == ["nft -s list table inet fjord", "nft -s list table ip fjord",
                         "nft -j list ruleset"]
    driver.load("table inet fjord\ndelete table inet fjord\ntable inet fjord {\n}\n")
    driver.list_table("inet", "fjord")
    driver.ruleset()
    assert run.calls[3:] == ["nft -c -f -", "nft -f -", "nft -s list table inet fjord",
                             "nft -j list ruleset"]
    driver.forget()
    driver.list_table("inet", "fjord")
    assert run.calls[-1] == "nft -s list table inet fjord"


def test_an_unreadable_ruleset_is_asked_again_not_kept(monkeypatch: pytest.MonkeyPatch):
    run = nft_runner(monkeypatch, **{"nft -j list ruleset": (1, "", "Operation not permitted")})
    driver = nft.Nft()
    for _ in range(2):
        with pytest.raises(FjordError, match="needs root"):
            driver.ruleset()
    assert run.calls == ["nft -j list ruleset"] * 2


def test_the_uplink_guard_is_found_in_the_runs_ruleset(monkeypatch: pytest.MonkeyPatch):
    run = nft_runner(monkeypatch)
    ctx = Context(desired=None)  # type: ignore[arg-type]
    driver = ctx.open(nft.DRIVER)
    assert uplink_filter.loaded(driver)
    driver.ruleset()  # the firewall's look for other firewalls: the same read
    assert run.calls == ["nft -j list ruleset"]
    # no JSON from this nft: the table is asked for alone
    run = nft_runner(monkeypatch, **{"nft -j list ruleset": (1, "", "Error: JSON support")})
    assert not uplink_filter.loaded(nft.Nft())
    assert run.calls == ["nft -j list ruleset", "nft -s list table netdev fjord-uplink"]


def test_dpkg_is_read_once_per_run_and_again_after_an_install():
    run = Recorder({"dpkg-query -W": (0, "nftables install ok installed\n", ""),
                    "apt-get install": (0, "", "")})
    apt = packages.AptManager(run)
    first = apt.installed()
    first["changed-by-the-caller"] = "installed"
    assert apt.installed() == {"nftables": "installed"}
    apt.install(["lxcfs"])
    apt.installed()
    assert [c.split()[0] for c in run.calls] == ["dpkg-query", "apt-get", "dpkg-query"]


def test_a_units_state_is_read_once_per_run_and_again_after_a_change():
    run = Recorder({"systemctl is-enabled": (0, "enabled\n", ""),
                    "systemctl is-active": (0, "active\n", ""),
                    "systemctl restart": (0, "", "")})
    mgr = SystemdManager(run)
    assert mgr.state("lxcfs").running and mgr.state("lxcfs").at_boot
    assert len(run.calls) == 2
    mgr.restart("lxcfs")
    mgr.state("lxcfs")
    assert run.calls[2:] == ["systemctl restart lxcfs", "systemctl is-enabled lxcfs",
                             "systemctl is-active lxcfs"]


def test_ofports_from_one_ovs_vsctl(monkeypatch: pytest.MonkeyPatch):
    table = {"headings": ["name", "ofport", "external_ids"], "data": [
        ["vnet3", 7, ["map", [["attached-mac", "52:54:00:AA:00:01"]]]],
        ["vnet9", 9, ["map", [["attached-mac", "52:54:00:aa:00:09"]]]],  # another bridge
        ["br-int", 65534, ["map", []]],
        ["vnet4", -1, ["map", [["attached-mac", "52:54:00:aa:00:04"]]]]]}
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> Result:
        calls.append(argv)
        return Result(argv, 0, "br-int\nvnet3\nvnet4\n" + json.dumps(table) + "\n", "", 0.0)

    monkeypatch.setattr(portguard.runner, "run", run)
    assert portguard.ofports("br-int") == {"52:54:00:aa:00:01": 7}
    assert len(calls) == 1 and calls[0][0] == "ovs-vsctl"


@pytest.mark.parametrize("stdout", ["vnet3\n", "vnet3\n{not json\n"])
def test_ofports_without_a_readable_table_is_a_guard_error(monkeypatch: pytest.MonkeyPatch,
                                                           stdout: str):
    monkeypatch.setattr(portguard.runner, "run",
                        lambda argv, **kw: Result(argv, 0, stdout, "", 0.0))
    with pytest.raises(portguard.GuardError):
        portguard.ofports("br-int")
