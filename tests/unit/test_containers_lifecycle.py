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
