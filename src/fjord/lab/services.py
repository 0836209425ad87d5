"""The lab's service manager: what fjord uses instead of systemd on a simulated server
(FJORD_SERVICE_MANAGER=lab, set by `fjord lab exec`).

It runs inside the lab and supervises the daemons the lab runs: ovsdb-server,
ovs-vswitchd (openvswitch-switch), lxcfs and libvirtd (with its sockets, which "listen"
while libvirtd runs: socket activation is not simulated). Whether a unit starts at
boot is systemd's own business even here: `systemctl enable|disable|is-enabled` work
on the server's /etc/systemd/system without a running systemd, and `lab reboot`
reads the same links. Units it does not supervise answer enabled="not-found",
active="inactive", as fjord.host.services.ServiceManager asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fjord.errors import FjordError
from fjord.host.services import UnitState
from fjord.lab.daemons import ServerDaemons
from fjord.lab.mounts import RUN_MARKER
from fjord.runner import run

RUN = Path("/run")

# unit -> the daemons it stands for
UNITS: dict[str, tuple[str, ...]] = {
    "openvswitch-switch.service": ("ovsdb-server", "ovs-vswitchd"),
    "ovsdb-server.service": ("ovsdb-server",),
    "ovs-vswitchd.service": ("ovs-vswitchd",),
    "lxcfs.service": ("lxcfs",),
    "libvirtd.service": ("libvirtd",),
    "libvirtd.socket": ("libvirtd",),
    "libvirtd-ro.socket": ("libvirtd",),
    "libvirtd-admin.socket": ("libvirtd",),
}


def unit_name(unit: str) -> str:
    return unit if "." in unit else f"{unit}.service"


def _execute(argv: list[str], env: Mapping[str, str] | None) -> None:
    run(argv, env=env, timeout=60)


class LabServiceManager:
    name = "lab"

    def __init__(self, run_dir: Path = RUN) -> None:
        if not (run_dir / RUN_MARKER).exists():
            raise FjordError(
                "FJORD_SERVICE_MANAGER=lab outside a lab",
                hint="run fjord in the lab (`fjord lab exec -- fjord ...`), or use systemd")
        self.daemons = ServerDaemons(run_dir, _execute)
        # `systemctl is-enabled`'s answers, until forget() (apply drops every driver's
        # cache after a change; enable/disable forget by themselves). Whether a daemon
        # runs is read from its pid file each time (no program runs for it).
        self._enabled_at_boot: dict[str, str] = {}

    def forget(self) -> None:
        self._enabled_at_boot.clear()

    def _daemons(self, unit: str) -> tuple[str, ...]:
        return UNITS.get(unit_name(unit), ())

    def _supervised(self, unit: str) -> tuple[str, ...]:
        daemons = self._daemons(unit)
        if not daemons:
            raise FjordError(f"the lab does not supervise {unit}",
                             hint=f"it runs {', '.join(sorted(UNITS))}")
        return daemons

    def state(self, unit: str) -> UnitState:
        daemons = self._daemons(unit)
        if not daemons:
            return UnitState(unit, "not-found", "inactive")
        running = all(self.daemons.pid(d) is not None for d in daemons)
        return UnitState(unit, self._enabled(unit), "active" if running else "inactive")

    def _enabled(self, unit: str) -> str:
        name = unit_name(unit)
        if name not in self._enabled_at_boot:
            result = run(["systemctl", "is-enabled", name], check=False, timeout=30)
            words = result.stdout.split()
            self._enabled_at_boot[name] = words[0] if words else "not-found"
        return self._enabled_at_boot[name]

    def started_at(self, unit: str) -> float | None:
        """The earliest start of the unit's daemons (a configuration written after it
        has not reached every one of them)."""
        times = [self.daemons.started(d) for d in self._daemons(unit)]
        return None if not times or None in times else min(t for t in times if t is not None)

    def enable(self, unit: str) -> None:
        self._at_boot("enable", unit)

    def disable(self, unit: str) -> None:
        self._at_boot("disable", unit)

    def _at_boot(self, verb: str, unit: str) -> None:
        """`systemctl enable|disable` of a unit the lab supervises; its kept answer goes."""
        self._supervised(unit)
        try:
            run(["systemctl", verb, unit_name(unit)], timeout=30)
        finally:
            self.forget()

    def start(self, unit: str) -> None:
        daemons = self._supervised(unit)
        if "ovsdb-server" in daemons:
            self.daemons.start_ovsdb()
        if "ovs-vswitchd" in daemons:
            self.daemons.start_vswitchd()
        if "lxcfs" in daemons:
            self.daemons.start_lxcfs()
        if "libvirtd" in daemons:
            self.daemons.start_libvirtd()

    def stop(self, unit: str) -> None:
        for daemon in reversed(self._supervised(unit)):
            self.daemons.stop(daemon)

    def restart(self, unit: str) -> None:
        self.stop(unit)
        self.start(unit)
