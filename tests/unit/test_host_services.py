"""Services: the systemd manager against captured systemctl output, the factory, the
Service resource (enable, start, stop, restart when its configuration changed) and
triggers."""

from __future__ import annotations

import json
import os
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from told import tell

from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host import services
from fjord.host.files import File
from fjord.host.services import Service, SystemdManager, Trigger, UnitState
from fjord.runner import Result

SYSTEMCTL = json.loads(
    (Path(__file__).parent / "golden" / "host" / "captured" / "systemctl.json").read_text())


class CapturedSystemctl:
    """A fake runner: each (verb, unit) answers with a captured systemctl output."""

    def __init__(self, table: dict[tuple[str, str], str]) -> None:
        self.table = table  # (verb, unit) -> key in systemctl.json
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], check: bool = True, **kw: Any) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[0] == "systemctl"
        key = self.table.get((argv[1], argv[-1]))
        if key is None:
            return Result(argv, 0, "", "", 0.0)
        out = SYSTEMCTL[key]
        if out["rc"] and check:
            raise FjordError(f"failed: {argv}")
        return Result(argv, out["rc"], out["stdout"], out["stderr"], 0.0)


def test_systemd_states_from_captured_output():
    run = CapturedSystemctl({
        ("is-enabled", "libvirtd"): "is-enabled libvirtd",
        ("is-active", "libvirtd"): "is-active (running systemd) active",
        ("is-enabled", "libvirtd-tcp.socket"): "is-enabled libvirtd-tcp.socket",
        ("is-active", "libvirtd-tcp.socket"): "is-active (running systemd) inactive",
        ("is-enabled", "nosuch.service"): "is-enabled nosuch.service",
        ("is-active", "nosuch.service"): "is-active (running systemd) inactive",
        ("is-enabled", "ovs-vswitchd.service"): "is-enabled ovs-vswitchd.service",
        ("is-active", "ovs-vswitchd.service"): "is-active (running systemd) failed",
    })
    mgr = SystemdManager(run)
    assert mgr.state("libvirtd") == UnitState("libvirtd", "enabled", "active")
    tcp = mgr.state("libvirtd-tcp.socket")
    assert (tcp.at_boot, tcp.startable, tcp.running) == (False, False, False)
    assert mgr.state("nosuch.service").enabled == "not-found"
    ovs = mgr.state("ovs-vswitchd.service")
    assert (ovs.enabled, ovs.at_boot, ovs.active) == ("static", True, "failed")
    assert all(call[:2] in (["systemctl", "is-enabled"], ["systemctl", "is-active"])
               for call in run.calls)


def test_without_systemd_the_state_is_unreadable():
    run = CapturedSystemctl({
        ("is-enabled", "libvirtd"): "is-enabled libvirtd",
        ("is-active", "libvirtd"): "is-active libvirtd (no systemd)",
    })
    with pytest.raises(StateUnreadable, match="systemd is not running") as err:
        SystemdManager(run).state("libvirtd")
    assert err.value.hint and "FJORD_SERVICE_MANAGER=lab" in err.value.hint


def test_systemd_operations_are_argument_lists():
    run = CapturedSystemctl({})
    mgr = SystemdManager(run)
    mgr.enable("libvirtd")
    mgr.disable("libvirtd-tcp.socket")
    mgr.start("openvswitch-switch")
    mgr.restart("libvirtd")
    mgr.stop("libvirtd-tls.socket")
    assert run.calls == [
        ["systemctl", "unmask", "libvirtd"], ["systemctl", "enable", "libvirtd"],
        ["systemctl", "disable", "libvirtd-tcp.socket"],
        ["systemctl", "start", "openvswitch-switch"], ["systemctl", "restart", "libvirtd"],
        ["systemctl", "stop", "libvirtd-tls.socket"]]


def test_start_time_from_the_monotonic_clock():
    run = CapturedSystemctl({("show", "libvirtd"): "show ExecMainStartTimestampMonotonic"})
    started = SystemdManager(run).started_at("libvirtd")
    assert started is not None
    assert abs(started - (time.time() - time.monotonic() + 1234.56789)) < 1.0
    assert run.calls[0] == ["systemctl", "show", "--property=ExecMainStartTimestampMonotonic",
                            "--value", "libvirtd"]
    assert SystemdManager(CapturedSystemctl({})).started_at("never") is None


def test_the_command_line_chooses_the_service_manager(monkeypatch: pytest.MonkeyPatch):
    from fjord.cli import system_environment

    assert services.open_manager(system_environment({})).name == "systemd"
    fake = types.ModuleType("fjord.lab.services")

    class LabServiceManager:
        name = "lab"

    fake.LabServiceManager = LabServiceManager  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fjord.lab.services", fake)
    env = system_environment({services.ENV: "lab"})
    assert env.service_manager_name == "lab" and services.open_manager(env).name == "lab"
    # a plan's context uses the environment's manager
    assert services.manager(Context(None, env=env)).name == "lab"  # type: ignore[arg-type]
    with pytest.raises(FjordError, match="not a service manager"):
        system_environment({services.ENV: "openrc"})


# -- the Service resource --------------------------------------------------------------


class FakeManager:
    name = "fake"

    def __init__(self, units: dict[str, tuple[str, str]]) -> None:
        self.units = dict(units)
        self.started: dict[str, float] = {}
        self.log: list[str] = []

    def state(self, unit: str) -> UnitState:
        enabled, active = self.units.get(unit, ("not-found", "inactive"))
        return UnitState(unit, enabled, active)

    def started_at(self, unit: str) -> float | None:
        return self.started.get(unit)

    def _set(self, unit: str, enabled: str | None = None, active: str | None = None) -> None:
        old_e, old_a = self.units.get(unit, ("disabled", "inactive"))
        self.units[unit] = (enabled or old_e, active or old_a)

    def enable(self, unit: str) -> None:
        self.log.append(f"enable {unit}")
        self._set(unit, enabled="enabled")

    def disable(self, unit: str) -> None:
        self.log.append(f"disable {unit}")
        self._set(unit, enabled="disabled")

    def start(self, unit: str) -> None:
        self.log.append(f"start {unit}")
        self._set(unit, active="active")
        self.started[unit] = time.time()

    def stop(self, unit: str) -> None:
        self.log.append(f"stop {unit}")
        self._set(unit, active="inactive")

    def restart(self, unit: str) -> None:
        self.log.append(f"restart {unit}")
        self.start(unit)
        self.log.pop()


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    return Context(desired=None)  # type: ignore[arg-type]


def run_all(resource: Service, ctx: Context) -> list[str]:
    done = []
    for change in resource.changes(ctx):
        change.run(ctx)
        done.append(change.detail)
    assert resource.changes(ctx) == []
    return done


def test_enable_and_start(ctx: Context):
    mgr = FakeManager({"openvswitch-switch": ("disabled", "inactive")})
    ctx.drivers[services.DRIVER] = mgr
    done = run_all(Service("openvswitch-switch", reason="bridges"), ctx)
    assert done == ["enable openvswitch-switch at boot (bridges); is disabled",
                    "start openvswitch-switch (is inactive)"]


def test_listener_disabled_and_stopped(ctx: Context):
    mgr = FakeManager({"libvirtd-tcp.socket": ("enabled", "active")})
    ctx.drivers[services.DRIVER] = mgr
    run_all(Service("libvirtd-tcp.socket", enabled=False, running=False), ctx)
    assert mgr.log == ["disable libvirtd-tcp.socket", "stop libvirtd-tcp.socket"]


def test_masked_unit_is_enabled(ctx: Context):
    ctx.drivers[services.DRIVER] = FakeManager({"libvirtd": ("masked", "inactive")})
    (enable, start) = Service("libvirtd").changes(ctx)
    assert "is masked" in enable.detail


def test_socket_activated_daemon_counts_as_running(ctx: Context):
    mgr = FakeManager({"libvirtd": ("enabled", "inactive"),
                       "libvirtd.socket": ("enabled", "active")})
    ctx.drivers[services.DRIVER] = mgr
    assert Service("libvirtd", socket="libvirtd.socket").changes(ctx) == []
    mgr.units["libvirtd.socket"] = ("enabled", "inactive")
    (start,) = Service("libvirtd", socket="libvirtd.socket").changes(ctx)
    assert start.detail.startswith("start libvirtd")


def daemon(tmp_path: Path, text: str) -> tuple[File, Service]:
    conf = File(tmp_path / "libvirtd.conf", text, owner=_me())
    return conf, Service("libvirtd", config=[conf])


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def test_restart_when_its_file_will_change(tmp_path: Path, ctx: Context):
    mgr = FakeManager({"libvirtd": ("enabled", "active")})
    mgr.started["libvirtd"] = time.time()
    ctx.drivers[services.DRIVER] = mgr
    conf, svc = daemon(tmp_path, "listen_tcp = 0\n")
    (restart,) = svc.changes(ctx)
    assert restart.detail == f"restart libvirtd ({conf.path} will change)"
    # apply: the file first, then the service, re-read just before it changes
    for change in conf.changes(ctx):
        change.run(ctx)
    (restart,) = svc.changes(ctx)
    assert "written after it started" in restart.detail
    restart.run(ctx)
    assert mgr.log == ["restart libvirtd"]
    assert svc.changes(ctx) == []
    # a new declared configuration: restart again
    conf2, svc2 = daemon(tmp_path, "listen_tcp = 0\nmax_clients = 64\n")
    assert [c.detail for c in svc2.changes(ctx)] == [
        f"restart libvirtd ({conf2.path} will change)"]


def test_no_restart_when_the_daemon_started_after_the_last_write(tmp_path: Path, ctx: Context):
    conf, svc = daemon(tmp_path, "listen_tcp = 0\n")
    conf.path.write_text("listen_tcp = 0\n")
    past = time.time() - 3600
    os.utime(conf.path, (past, past))
    mgr = FakeManager({"libvirtd": ("enabled", "active")})
    mgr.started["libvirtd"] = time.time() - 60
    ctx.drivers[services.DRIVER] = mgr
    assert svc.changes(ctx) == []  # no record, but the daemon read the file as it is
    mgr.started.pop("libvirtd")
    (restart,) = svc.changes(ctx)  # start time unknown and no record: restart once
    assert "start time is unknown" in restart.detail


def test_inactive_daemon_is_started_not_restarted(tmp_path: Path, ctx: Context):
    mgr = FakeManager({"libvirtd": ("enabled", "inactive")})
    ctx.drivers[services.DRIVER] = mgr
    conf, svc = daemon(tmp_path, "listen_tcp = 0\n")
    conf.path.write_text("listen_tcp = 0\n")
    assert run_all(svc, ctx) == ["start libvirtd (is inactive)"]
    # the start recorded the configuration: a later clock skew cannot cause a restart
    mgr.started.pop("libvirtd")
    assert svc.changes(ctx) == []


# -- triggers --------------------------------------------------------------------------


class Counting(Trigger):
    kind = "count"
    what = "count"

    def __init__(self, *args: Any, fail: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.runs = 0
        self.fail = fail

    def action(self, ctx: Context) -> None:
        self.runs += 1
        if self.fail:
            raise FjordError("no")


def test_trigger_runs_once_per_input_change(tmp_path: Path, ctx: Context):
    f = File(tmp_path / "a", "one\n")
    t = Counting("x", [f])
    (change,) = t.changes(ctx)
    assert change.detail == "run count (fjord has not run it yet)"
    change.run(ctx)
    assert t.changes(ctx) == [] and t.runs == 1
    t2 = Counting("x", [File(tmp_path / "a", "two\n")])
    (change,) = t2.changes(ctx)
    assert change.detail == "run count (its inputs changed since its last run)"


def test_trigger_records_only_after_success(tmp_path: Path, ctx: Context):
    t = Counting("x", [File(tmp_path / "a", "one\n")], fail=True)
    (change,) = t.changes(ctx)
    with pytest.raises(FjordError):
        change.run(ctx)
    assert t.pending()
