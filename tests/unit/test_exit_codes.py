"""The exit-code contract of plan, apply, status and check (docs/operations.md, "Exit
codes"), each code driven through fjord's real entry point with the host faked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from told import tell

import fjord.check
import fjord.cli
import fjord.config.desired
import fjord.engine.apply
import fjord.status
from fjord.engine.change import Change, Unreadable
from fjord.engine.plan import Plan
from fjord.errors import FjordError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "examples" / "lab.yaml")
SAID = "No changes: the host is as declared."


def fjord_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fjord", *args])
    try:
        fjord.cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


class FakeCtx:
    def __init__(self, warnings: list[str] | None = None) -> None:
        self.warnings = list(warnings or [])

    def close(self) -> None:
        pass


def change(what: str = "file /etc/x") -> Change:
    return Change(what, "create", f"write {what}", lambda ctx: None)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def fake_plan(monkeypatch: pytest.MonkeyPatch, plan: Plan,
              ctx: FakeCtx | None = None) -> FakeCtx:
    ctx = ctx or FakeCtx(plan.warnings)
    monkeypatch.setattr(fjord.cli, "_plan", lambda desired, options: (ctx, [], plan))
    return ctx


UNREAD = Unreadable("bridge br-ex", "Open vSwitch is not running")


# --- plan ------------------------------------------------------------------------------

def test_plan_0_without_changes(monkeypatch, capsys, as_root):
    fake_plan(monkeypatch, Plan())
    for flags in ((), ("--detailed-exitcode",)):
        code, out, _ = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG, *flags)
        assert code == 0 and SAID in out


def test_plan_0_with_changes_and_4_with_detailed_exitcode(monkeypatch, capsys, as_root):
    fake_plan(monkeypatch, Plan(changes=[change()]))
    assert fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG)[0] == 0
    assert fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG, "--json")[0] == 0
    code, out, _ = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG,
                              "--detailed-exitcode")
    assert code == 4 and "Plan: 1 change" in out


def test_plan_1_on_error(monkeypatch, capsys, as_root):
    def broken(desired: Any, options: Any) -> Any:
        raise FjordError("something broke")

    monkeypatch.setattr(fjord.cli, "_plan", broken)
    code, _, err = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG)
    assert code == 1 and "something broke" in err


def test_plan_2_on_an_invalid_or_missing_file(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("host: [\n")
    for path in (str(bad), str(tmp_path / "missing.yaml")):
        for command in ("plan", "apply", "status", "check"):
            code, _, _ = fjord_main(monkeypatch, capsys, command, "-c", path)
            assert code == 2, (command, path)
    assert fjord_main(monkeypatch, capsys, "plan", "--no-such-option")[0] == 2


def test_plan_3_when_unreadable_without_root_even_with_changes(monkeypatch, capsys, as_user):
    fake_plan(monkeypatch, Plan(changes=[change()], unreadable=[UNREAD]))
    code, out, err = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG)
    assert code == 3 and "needs root" in err and "cannot read bridge br-ex" in out


def test_plan_3_unreadable_and_nothing_else_is_never_as_declared(monkeypatch, capsys,
                                                                  as_root):
    fake_plan(monkeypatch, Plan(unreadable=[UNREAD], warnings=["look out"]))
    code, out, err = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG)
    assert code == 3 and SAID not in out
    assert "cannot read bridge br-ex" in out and "look out" in out
    assert "1 resource could not be read" in err
    assert fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG, "--json")[0] == 3


def test_plan_as_root_unreadable_beside_changes_is_the_changes_verdict(monkeypatch, capsys,
                                                                        as_root):
    # a fresh server: Open vSwitch is not installed yet, apply installs it
    fake_plan(monkeypatch, Plan(changes=[change()], unreadable=[UNREAD]))
    assert fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG)[0] == 0
    code, _, _ = fjord_main(monkeypatch, capsys, "plan", "-c", CONFIG, "--detailed-exitcode")
    assert code == 4


def test_plan_help_documents_the_codes(monkeypatch, capsys):
    code, out, _ = fjord_main(monkeypatch, capsys, "plan", "--help")
    assert code == 0
    for line in ("0  nothing to change", "1  error", "2  the command line or the "
                 "configuration file is invalid", "3  some of the host's state could not "
                 "be read", "4  changes are pending"):
        assert line in out, line
    for command in ("apply", "status", "check"):
        code, out, _ = fjord_main(monkeypatch, capsys, command, "--help")
        assert code == 0 and "Exit codes:" in out and "  3  " in out, command
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "## Exit codes" in operations and "--detailed-exitcode" in operations


# --- apply -----------------------------------------------------------------------------

def test_apply_prints_the_plans_warnings_and_those_found_while_applying(monkeypatch, capsys,
                                                                        as_root):
    ctx = fake_plan(monkeypatch, Plan(changes=[change()], warnings=["from the plan"]))

    def run(resources: Any, c: Any, reporter: Any, journal: Any = None,
            shown: Any = None) -> list[Change]:
        c.warnings.append("container web was made as copy: packages are not added")
        return [change()]

    monkeypatch.setattr(fjord.engine.apply, "apply", run)
    code, out, _ = fjord_main(monkeypatch, capsys, "apply", "-c", CONFIG, "--yes")
    assert code == 0 and "Applied 1 change." in out
    assert out.count("from the plan") == 1 and "packages are not added" in out
    assert ctx.warnings  # the same context


def test_apply_0_without_changes_still_shows_warnings(monkeypatch, capsys, as_root):
    fake_plan(monkeypatch, Plan(warnings=["/etc/apt/sources.list:1 also lists it"]))
    code, out, _ = fjord_main(monkeypatch, capsys, "apply", "-c", CONFIG, "--yes")
    assert code == 0 and SAID in out and "also lists" in out
    code, out, _ = fjord_main(monkeypatch, capsys, "apply", "-c", CONFIG, "--yes", "--json")
    assert code == 0 and '"also lists' in out.replace('"/etc/apt/sources.list:1 ', '"')


def test_apply_3_when_nothing_to_change_but_something_unreadable(monkeypatch, capsys,
                                                                  as_root):
    fake_plan(monkeypatch, Plan(unreadable=[UNREAD]))
    code, out, err = fjord_main(monkeypatch, capsys, "apply", "-c", CONFIG, "--yes")
    assert code == 3 and SAID not in out and "could not be read" in err


def test_apply_1_when_a_change_fails(monkeypatch, capsys, as_root):
    fake_plan(monkeypatch, Plan(changes=[change()]))

    def run(resources: Any, c: Any, reporter: Any, journal: Any = None,
            shown: Any = None) -> list[Change]:
        raise FjordError("file /etc/x: create failed")

    monkeypatch.setattr(fjord.engine.apply, "apply", run)
    code, _, err = fjord_main(monkeypatch, capsys, "apply", "-c", CONFIG, "--yes")
    assert code == 1 and "create failed" in err


# --- status ----------------------------------------------------------------------------

def report(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cgroups": {"can_run_lxc": True, "layout": "unified", "memory_limits": "enforced"},
        "host": {"fqdn": "h.example.net", "ipv4": "192.0.2.2", "ipv6": None,
                 "private": "10.1.0.1/16", "converged": True},
        "drift": [], "unreadable": [], "in_order": [], "containers": []}
    return {**base, **kw}


@pytest.mark.parametrize("rep, code", [
    (report(), 0),
    (report(drift=[{"resource": "service libvirtd", "action": "update",
                    "detail": "start libvirtd"}]), 1),
    (report(cgroups={"can_run_lxc": False, "layout": "hybrid"}), 1),
    (report(containers=[{"name": "web", "fqdn": "web", "ipv4": "10.1.0.2", "ipv6": None,
                         "in_file": True, "state": "running",
                         "cgroups": [{"check": "memory limit enforced", "ok": False,
                                      "detail": "no"}]}]), 1),
    (report(unreadable=[{"resource": "bridge br-ex", "reason": "OVS down"}]), 3),
    (report(containers=[{"name": "web", "fqdn": "web", "ipv4": "10.1.0.2", "ipv6": None,
                         "in_file": True, "state": "unknown (libvirtd down)"}]), 3),
])
def test_status_codes_as_root(monkeypatch, capsys, as_root, rep, code):
    monkeypatch.setattr(fjord.status, "collect", lambda desired: rep)
    assert fjord_main(monkeypatch, capsys, "status", "-c", CONFIG)[0] == code
    assert fjord_main(monkeypatch, capsys, "status", "-c", CONFIG, "--json")[0] == code


def test_status_3_needs_root_even_with_drift(monkeypatch, capsys, as_user):
    rep = report(drift=[{"resource": "sysctl x", "action": "update", "detail": "x = 1"}],
                 unreadable=[{"resource": "nftables inet fjord", "reason": "needs root"}])
    monkeypatch.setattr(fjord.status, "collect", lambda desired: rep)
    code, _, err = fjord_main(monkeypatch, capsys, "status", "-c", CONFIG)
    assert code == 3 and "needs root" in err


def test_status_3_on_error(monkeypatch, capsys, as_root):
    def broken(desired: Any) -> Any:
        raise FjordError("cannot tell")

    monkeypatch.setattr(fjord.status, "collect", broken)
    code, _, err = fjord_main(monkeypatch, capsys, "status", "-c", CONFIG)
    assert code == 3 and "cannot tell" in err


# --- check -----------------------------------------------------------------------------

def test_check_codes(monkeypatch, capsys, as_root):
    ok = fjord.check.CheckResult("host: gateway", True, "answers")
    bad = fjord.check.CheckResult("container web: ping", False, "no answer")
    monkeypatch.setattr(fjord.check, "run_checks", lambda desired: [ok])
    assert fjord_main(monkeypatch, capsys, "check", "-c", CONFIG)[0] == 0
    monkeypatch.setattr(fjord.check, "run_checks", lambda desired: [ok, bad])
    assert fjord_main(monkeypatch, capsys, "check", "-c", CONFIG)[0] == 1
    assert fjord_main(monkeypatch, capsys, "check", "-c", CONFIG, "--json")[0] == 1

    def broken(desired: Any) -> Any:
        raise FjordError("cannot check")

    monkeypatch.setattr(fjord.check, "run_checks", broken)
    assert fjord_main(monkeypatch, capsys, "check", "-c", CONFIG)[0] == 3


def test_check_3_needs_root(monkeypatch, capsys, as_user):
    monkeypatch.setattr(fjord.check, "run_checks", lambda desired: [])
    code, _, err = fjord_main(monkeypatch, capsys, "check", "-c", CONFIG)
    assert code == 3 and "needs root" in err


# --- for real, as nobody on this machine (reads only) -----------------------------------

def test_status_and_check_as_nobody_say_needs_root():
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        prefix = []
    env = {**os.environ, "FJORD_STATE_DIR": "/nonexistent-fjord-state"}
    for command in ("status", "check"):
        out = subprocess.run([*prefix, sys.executable, "-m", "fjord", command, "-c", CONFIG],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert out.returncode == 3, (command, out.stdout, out.stderr)
        assert "needs root" in out.stderr, (command, out.stderr)
