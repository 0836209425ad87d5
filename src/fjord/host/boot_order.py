"""Open vSwitch must be up before ifupdown brings up the OVS bridges at boot. Debian's
ovsdb-server and ovs-vswitchd units say so (Before=networking.service); where a host's
units do not, fjord adds a drop-in to networking.service, and only then."""

from __future__ import annotations

from pathlib import Path

from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.host.files import File

OVS_UNITS = ("ovsdb-server.service", "ovs-vswitchd.service")
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "lib/systemd/system",
             "usr/lib/systemd/system")
DROP_IN = Path("etc/systemd/system/networking.service.d/fjord-openvswitch.conf")


def _unit_lines(root: Path, unit: str) -> list[str]:
    """The unit's lines, its drop-ins' after (what systemd would read, roughly)."""
    lines: list[str] = []
    for d in UNIT_DIRS:
        path = root / d / unit
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            break
    for d in UNIT_DIRS:
        conf = root / d / f"{unit}.d"
        if conf.is_dir():
            for f in sorted(conf.glob("*.conf")):
                lines += f.read_text(errors="replace").splitlines()
    return lines


def ordered_before_networking(root: Path, unit: str) -> bool:
    for line in _unit_lines(root, unit):
        key, _, value = line.partition("=")
        if key.strip() == "Before" and "networking.service" in value.split():
            return True
    return False


def render() -> str:
    units = " ".join(OVS_UNITS)
    return ("# Managed by fjord: the OVS bridges in /etc/network/interfaces need Open vSwitch.\n"
            f"[Unit]\nWants={units}\nAfter={units}\n")


class BootOrder(Resource):
    kind = "boot-order"

    def __init__(self, root: Path = Path("/"), after: tuple[Reference, ...] = ()) -> None:
        super().__init__("openvswitch before networking")
        self.root = root
        self.after = after

    def _missing(self) -> list[str]:
        return [u for u in OVS_UNITS if not ordered_before_networking(self.root, u)]

    def changes(self, ctx: Context) -> list[Change]:
        drop_in = File(self.root / DROP_IN, render(),
                       reason="start Open vSwitch before ifupdown at boot")
        if not self._missing() or not drop_in.changes(ctx):
            return []
        missing = ", ".join(self._missing())
        return [Change(self.id, "create", f"order {missing} before networking.service "
                       f"(drop-in {DROP_IN.name})", lambda c: [ch.run(c) for ch in
                                                               drop_in.changes(c)],
                       diff=drop_in.changes(ctx)[0].diff)]

    def unchanged_reason(self, ctx: Context) -> str:
        if self._missing():
            return f"{DROP_IN} orders Open vSwitch before networking"
        return "ovsdb-server and ovs-vswitchd start before networking.service (their units)"
