"""`fjord container …`: the same -c everywhere, several names, list without a file,
unknown names called unknown (libvirt, roots and lifecycle faked: no root needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import fjord.commands.container as manage
import fjord.containers.lifecycle as lifecycle
from fjord.commands.container import container
from fjord.containers import rootfs
from fjord.containers.libvirt import DomainState
from fjord.engine.plan import StateUnreadable

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "examples" / "lab.yaml")   # declares `test`
COMMANDS = ("list", "start", "stop", "restart", "destroy", "exec", "console")


class FakeLibvirt:
    def __init__(self, domains: dict[str, bool], readable: bool = True) -> None:
        self.domains = domains   # name -> running
        self.readable = readable

    def _check(self) -> None:
        if not self.readable:
            raise StateUnreadable("cannot connect to libvirt (lxc:///): permission denied")

    def domain(self, name: str) -> DomainState | None:
        self._check()
        if name not in self.domains:
            return None
        return DomainState(name, "uuid", self.domains[name], True, "<domain/>")

    def names(self) -> list[str]:
        self._check()
        return sorted(self.domains)

    def memory_usage(self, name: str) -> int | None:
        return 64 << 20

    def close(self) -> None:
        pass


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """A host with domains `test` (running) and `old` (stopped, made by fjord, no longer
    in the file), and no /etc/fjord/fjord.yaml."""
    calls: list[tuple[str, str]] = []
    lv = FakeLibvirt({"test": True, "old": False})
    records = {n: rootfs.Record(n, "overlay", "img", "/lower", 0.0,
                                {"ipv4": f"10.1.0.{i}"}) for i, n in ((2, "test"), (9, "old"))}
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("FJORD_CONFIG", raising=False)
    monkeypatch.setattr("fjord.cli.DEFAULT_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setattr(manage, "_libvirt", lambda: lv)
    monkeypatch.setattr(rootfs, "read_record", lambda layout: records.get(layout.name))
    monkeypatch.setattr(rootfs, "all_records", lambda base=None: list(records.values()))
    for verb in ("start", "stop", "kill", "destroy"):
        def record(*args: Any, _verb: str = verb, **kw: Any) -> None:
            name = args[2].name if _verb == "start" else args[1]
            calls.append((_verb, name))
        monkeypatch.setattr(lifecycle, verb, record)
    monkeypatch.setattr(lifecycle, "init_pid", lambda name: 4242 if lv.domains.get(name)
                        else None)
    return {"calls": calls, "lv": lv, "records": records}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(container, list(args), catch_exceptions=True)


def test_every_subcommand_takes_c_the_same_way():
    for name in COMMANDS:
        cmd = container.commands[name]
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"-c", "--config"} <= opts, name


def test_list_without_a_file_shows_what_exists(host):
    out = invoke("list", "--json")
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)["containers"]}
    assert set(rows) == {"test", "old"}
    assert rows["test"]["state"] == "running" and rows["old"]["state"] == "stopped"
    assert rows["old"]["in_file"] is None and rows["old"]["ipv4"] == "10.1.0.9"
    text = invoke("list").output
    assert "old" in text and "not in the file" not in text


def test_list_with_a_file_says_what_it_declares(host):
    out = invoke("list", "-c", CONFIG, "--json")
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)["containers"]}
    assert rows["test"]["in_file"] is True and rows["old"]["in_file"] is False
    wide = CliRunner(env={"COLUMNS": "200"}).invoke(container, ["list", "-c", CONFIG])
    assert "old (not in the file)" in wide.output


def test_list_says_when_libvirt_cannot_be_read(host, monkeypatch):
    host["lv"].readable = False
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = CliRunner().invoke(container, ["list"])
    assert out.exit_code == 3
    assert "cannot read libvirt" in out.output and "needs root" in out.output


def test_stop_start_restart_destroy_take_several_names(host):
    calls = host["calls"]
    assert invoke("stop", "test", "old").exit_code == 0
    assert calls == [("stop", "test"), ("stop", "old")]
    calls.clear()
    assert invoke("stop", "--force", "-c", CONFIG, "test", "old").exit_code == 0
    assert calls == [("kill", "test"), ("kill", "old")]
    calls.clear()
    out = invoke("destroy", "--yes", "old", "test", "old")
    assert out.exit_code == 0, out.output
    assert calls == [("destroy", "old"), ("destroy", "test")]
    calls.clear()
    out = invoke("restart", "-c", CONFIG, "test")
    assert out.exit_code == 0, out.output
    assert calls == [("stop", "test"), ("start", "test")]
    calls.clear()
    host["lv"].domains["test"] = False
    assert invoke("start", "-c", CONFIG, "test").exit_code == 0
    assert calls == [("start", "test")]


def test_unknown_names_are_unknown_and_nothing_is_done(host):
    for args in (("stop", "test", "nope"), ("destroy", "--yes", "nope", "test"),
                 ("stop", "-c", CONFIG, "nope"), ("exec", "nope", "--", "true"),
                 ("exec", "-c", CONFIG, "nope", "--", "true"), ("console", "nope")):
        out = invoke(*args)
        assert out.exit_code != 0, args
        assert "unknown container: nope" in str(out.exception), (args, out.exception)
        assert "not running" not in str(out.exception)
    assert host["calls"] == []
    out = invoke("start", "-c", CONFIG, "test", "nope")
    assert "no container named nope" in str(out.exception) and host["calls"] == []


def test_exec_of_a_stopped_container_says_not_running(host):
    out = invoke("exec", "old", "--", "true")
    assert "old is not running" in str(out.exception)


def test_exec_keeps_the_commands_own_options(host, monkeypatch):
    seen: dict[str, Any] = {}
    from fjord.containers import relay

    monkeypatch.setattr(relay, "run", lambda pid, argv, env: seen.update(argv=argv) or 0)
    out = invoke("exec", "test", "--", "grep", "-c", "x", "/etc/hostname")
    assert out.exit_code == 0, out.output
    assert seen["argv"][-4:] == ["grep", "-c", "x", "/etc/hostname"]
    out = invoke("exec", "test", "ls", "-la")
    assert seen["argv"][-2:] == ["ls", "-la"]
