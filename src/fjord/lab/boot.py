"""The server's boot, replayed from its persisted files only (Debian 12's order).

1. sysctl    ``net.*`` keys of /etc/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d (as
             systemd-sysctl merges them); other keys are global to the machine and
             are never applied
2. nftables  `nft -f /etc/nftables.conf` when nftables.service is enabled
3. Open vSwitch  ovsdb-server on its database, ovs-vswitchd, then
             `ifup --allow=ovs` for the bridges `ifquery --allow=ovs --list` names
             (what Debian's openvswitch-switch does)
4. networking    `ifup -a` with /etc/network/interfaces (its if-*.d hooks included)
5. libvirtd  started when enabled; it starts the autostart domains

A failing step is recorded and the boot goes on, as a real boot does; the report
says what failed. "Enabled" is read from the server's /etc/systemd/system as
`systemctl enable` leaves it.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fjord.errors import FjordError
from fjord.lab.daemons import ServerDaemons
from fjord.lab.enter import enter_argv
from fjord.lab.namespaces import inside
from fjord.runner import run

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d",
               "/usr/lib/sysctl.d", "/lib/sysctl.d")


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {"step": self.name, "ok": self.ok, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


@dataclass
class BootReport:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "steps": [s.to_json() for s in self.steps]}


class ServerRoot:
    """The server's files, read from the machine through the holder's root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, holder_pid: int) -> ServerRoot:
        return cls(Path(f"/proc/{holder_pid}/root"))

    def path(self, path: str) -> Path:
        """``path`` as the server sees it, following symbolic links inside its root."""
        p = Path(path)
        for _ in range(40):
            host = self.root / str(p).lstrip("/")
            if not host.is_symlink():
                return host
            target = os.readlink(host)
            p = Path(target) if target.startswith("/") else p.parent / target
        raise FjordError(f"too many symbolic links at {path} in the lab")

    def enabled(self, *units: str) -> bool:
        base = self.path("/etc/systemd/system")
        if not base.is_dir():
            return False
        for d in base.iterdir():
            if d.name.endswith((".wants", ".requires")) and any((d / u).exists() or
                                                                (d / u).is_symlink()
                                                                for u in units):
                return True
        return False


# --- sysctl -------------------------------------------------------------------------------


def parse_sysctl(text: str) -> list[tuple[str, str, bool]]:
    """(key, value, ignore_failure) of a sysctl.d file, in order."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        ignore = key.startswith("-")
        key = key.lstrip("-").strip().replace("/", ".")
        out.append((key, value.strip(), ignore))
    return out


def sysctl_files(root: ServerRoot) -> list[Path]:
    """systemd-sysctl's order: by file name; for equal names the first directory wins."""
    chosen: dict[str, Path] = {}
    for d in SYSCTL_DIRS:
        directory = root.path(d)
        if not directory.is_dir():
            continue
        for f in directory.iterdir():
            if f.name.endswith(".conf") and f.name not in chosen:
                chosen[f.name] = f
    return [chosen[n] for n in sorted(chosen)]


def net_settings(root: ServerRoot) -> list[tuple[str, str, bool]]:
    out = []
    for f in sysctl_files(root):
        real = root.path(str(f).removeprefix(str(root.root)))
        try:
            text = real.read_text()
        except OSError:
            continue
        out += [s for s in parse_sysctl(text) if s[0].startswith("net.")]
    return out


def apply_net_sysctls(netns: str, settings: list[tuple[str, str, bool]]) -> list[str]:
    """Write the settings in ``netns``; return the failures (not ignored ones)."""
    failures = []
    with inside(netns):
        for key, value, ignore in settings:
            paths = _expand("/proc/sys/" + key.replace(".", "/"))
            if not paths and not ignore:
                failures.append(f"{key}: no such setting")
            for p in paths:
                try:
                    with open(p, "w", encoding="ascii") as fh:
                        fh.write(value)
                except OSError as exc:
                    if not ignore:
                        failures.append(f"{key} = {value}: {exc.strerror}")
    return failures


def _expand(path: str) -> list[str]:
    if not any(c in path for c in "*?["):
        return [path] if os.path.exists(path) else []
    parts = path.strip("/").split("/")
    found = ["/"]
    for part in parts:
        nxt = []
        for base in found:
            try:
                names = os.listdir(base)
            except OSError:
                continue
            nxt += [os.path.join(base, n) for n in fnmatch.filter(names, part)]
        found = nxt
    return sorted(found)


# --- the sequence -------------------------------------------------------------------------


class Boot:
    def __init__(self, lab: str, netns: str, holder_pid: int, daemons: ServerDaemons) -> None:
        self.lab = lab
        self.netns = netns
        self.root = ServerRoot.of(holder_pid)
        self.daemons = daemons
        self.report = BootReport()

    def _in_server(self, argv: list[str]) -> str:
        return run(enter_argv(self.lab, "server", argv), timeout=120).stdout

    def step(self, name: str, action: Callable[[], str]) -> None:
        start = time.monotonic()
        try:
            detail, ok = action(), True
        except FjordError as exc:
            detail, ok = exc.message, False
        except OSError as exc:
            detail, ok = str(exc), False
        self.report.steps.append(Step(name, ok, detail, time.monotonic() - start))

    def sysctl(self) -> str:
        settings = net_settings(self.root)
        failures = apply_net_sysctls(self.netns, settings)
        if failures:
            raise FjordError("; ".join(failures))
        return f"{len(settings)} net.* setting(s)"

    def nftables(self) -> str:
        if not self.root.enabled("nftables.service"):
            return "nftables.service not enabled"
        if not self.root.path("/etc/nftables.conf").exists():
            return "no /etc/nftables.conf"
        self._in_server(["nft", "-f", "/etc/nftables.conf"])
        return "loaded /etc/nftables.conf"

    def openvswitch(self) -> str:
        if not self.root.enabled("openvswitch-switch.service", "ovs-vswitchd.service"):
            return "openvswitch-switch.service not enabled"
        self.daemons.start_ovs()
        bridges = self._in_server(["ifquery", "--allow=ovs", "--list"]).split()
        if bridges:
            self._in_server(["ifup", "--allow=ovs", *bridges])
        return f"ovsdb-server, ovs-vswitchd; ifup --allow=ovs {' '.join(bridges) or '(none)'}"

    def networking(self) -> str:
        if not self.root.enabled("networking.service"):
            return "networking.service not enabled"
        self._in_server(["ifup", "-a", "--read-environment"])
        return "ifup -a"

    def libvirtd(self) -> str:
        if not self.root.enabled("libvirtd.service", "libvirtd.socket"):
            return "libvirtd not enabled"
        self.daemons.start_libvirtd()
        return "libvirtd (autostart domains)"

    def run(self) -> BootReport:
        self.step("sysctl", self.sysctl)
        self.step("nftables", self.nftables)
        self.step("openvswitch", self.openvswitch)
        self.step("networking", self.networking)
        self.step("libvirtd", self.libvirtd)
        return self.report
