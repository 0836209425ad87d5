"""Stopping a container when libvirt does not know its init (a fake libvirt above the
real signal path: the "container" is a process of this test)."""

from __future__ import annotations

import subprocess

from fjord.containers import lifecycle
from fjord.containers.libvirt import DomainState
from fjord.errors import FjordError


class Unaware:
    """libvirt just after a start whose init event it missed: running, no shutdown."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.shutdowns = proc, 0

    def domain(self, name: str) -> DomainState | None:
        running = self.proc.poll() is None
        return DomainState(name, "u", running, False, "<domain/>")

    def shutdown(self, name: str) -> None:
        self.shutdowns += 1
        raise FjordError(f"libvirt: shut down {name}: Requested operation is not valid: "
                         "Init process ID is not yet known")


def test_stop_powers_off_through_systemd_when_libvirt_does_not_know_the_init(monkeypatch):
    # SIGRTMIN+4 is systemd's "power off"; for `sleep` its default action ends it
    init = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setattr(lifecycle, "init_pid", lambda name: init.pid)
        lv = Unaware(init)
        lifecycle.stop(lv, "web", timeout=10)  # type: ignore[arg-type]
        assert init.wait(5) == -(lifecycle.signal.SIGRTMIN + 4)
        assert lv.shutdowns >= 2            # it asked libvirt first, for a while
    finally:
        init.kill()
        init.wait()


def test_other_shutdown_errors_are_not_hidden(monkeypatch):
    init = subprocess.Popen(["sleep", "60"])
    try:
        class Broken(Unaware):
            def shutdown(self, name: str) -> None:
                raise FjordError("libvirt: shut down web: internal error")

        monkeypatch.setattr(lifecycle, "init_pid", lambda name: init.pid)
        try:
            lifecycle.stop(Broken(init), "web")  # type: ignore[arg-type]
        except FjordError as exc:
            assert "internal error" in exc.message
        else:
            raise AssertionError("the error was swallowed")
        assert init.poll() is None
    finally:
        init.kill()
        init.wait()


# --- the declared run state ----------------------------------------------------------

STOPPED = "  idle: {state: stopped}\n"


def _desired(tmp_path, extra: str = STOPPED):
    from pathlib import Path

    from fjord.config.desired import load

    path = tmp_path / "fjord.yaml"
    path.write_text(Path("examples/lab.yaml").read_text() + extra)
    return load(str(path))


class Domains:
    """libvirt as far as the container resources ask it."""

    def __init__(self, **running: bool) -> None:
        self.running = running
        self.stopped: list[str] = []

    def domain(self, name: str) -> DomainState | None:
        if name not in self.running:
            return None
        return DomainState(name, "u", self.running[name], False, "<domain/>")

    def shutdown(self, name: str) -> None:
        self.stopped.append(name)
        self.running[name] = False


def test_a_container_declared_stopped_does_not_start_at_boot(tmp_path):
    desired = _desired(tmp_path, STOPPED + "  manual: {autostart: false}\n")
    idle = desired.container("idle")
    assert (idle.state, idle.autostart) == ("stopped", False)
    assert desired.container("test").state == "running"
    assert desired.container("manual").state == "running"
    # `state: stopped` wins over an autostart the defaults ask for
    desired = _desired(tmp_path, "  idle: {state: stopped, autostart: true}\n")
    assert desired.container("idle").autostart is False


def test_a_stopped_container_is_not_drift_and_a_running_one_is_shut_down(tmp_path):
    from fjord.containers.resources import RunningResource
    from fjord.engine.resource import Context

    desired = _desired(tmp_path)
    ctx = Context(desired)
    lv = Domains(idle=False)
    ctx.drivers["libvirt"] = lv
    running = RunningResource(desired.container("idle"))
    assert running.changes(ctx) == []
    assert "stopped, as declared" in running.unchanged_reason(ctx)
    lv.running["idle"] = True  # started by hand
    (change,) = running.changes(ctx)
    assert change.detail == "shut down idle (declared stopped)"
    change.run(ctx)
    assert lv.stopped == ["idle"] and running.changes(ctx) == []


def test_check_agrees_with_the_declared_run_state(tmp_path, monkeypatch):
    from fjord.containers import checks

    desired = _desired(tmp_path, STOPPED + "  manual: {autostart: false}\n")
    lv = Domains(idle=False, manual=False)

    def results(name: str):
        return list(checks._container(lv, desired, desired.container(name),  # type: ignore[arg-type]
                                      None, None, "deb.debian.org"))

    (ok,) = results("idle")
    assert ok.ok and ok.name == "container idle: stopped, as declared"
    lv.running["idle"] = True
    (bad,) = results("idle")
    assert not bad.ok and "shuts it down" in bad.detail
    # declared running, autostart off, after a boot: down, and check says how to declare it
    (down,) = results("manual")
    assert not down.ok and "state: stopped" in down.detail
