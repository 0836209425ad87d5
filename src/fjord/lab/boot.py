"""The server's shutdown and boot, replayed as the installed systemd units run them.

At shutdown, before the server's processes are killed:

0. networking  the ExecStop (then ExecStopPost) of networking.service, when enabled:
               `ifdown -a --read-environment --exclude=lo` on Debian 12/13, whose
               openvswitch hook deletes the bridges and ports ifupdown recorded up

Then the boot, from the persisted files only (Debian 12/13's order):

1. sysctl    ``net.*`` keys of /etc/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d (as
             systemd-sysctl merges them); other keys are global to the machine and
             are never applied
2. nftables  the ExecStart of nftables.service (`nft -f /etc/nftables.conf`), when
             enabled
3. Open vSwitch  ovsdb-server on its database, ovs-vswitchd, then the ExecStart of
             openvswitch-switch.service (/bin/true on Debian 12/13: nothing), when enabled
4. networking    the ExecStart of networking.service (`ifup -a --read-environment`: only
             `auto` stanzas, with the if-*.d hooks), with its EnvironmentFile
5. lxcfs     started when enabled (before libvirtd: the containers bind its files)
6. libvirtd  started when enabled; it starts the autostart domains

Commands come from the unit files installed in the server's root (/etc/systemd/system,
/run/systemd/system, /lib/systemd/system, ... and their drop-ins, as systemd merges
them); `/bin/true` is skipped, a `-` prefix lets a command fail. A failing step is
recorded and the boot goes on, as a real boot does; the report says what failed.
"Enabled" is read from the server's /etc/systemd/system as `systemctl enable` leaves it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
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
# systemd's unit search path (system manager), highest priority first
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
NO_OPS = ("/bin/true", "/usr/bin/true")


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

    def unit(self, name: str) -> dict[str, list[str]]:
        """The [Service] settings of a unit, its drop-ins merged (see parse_unit)."""
        texts = []
        for d in UNIT_DIRS:
            main = self.path(f"{d}/{name}")
            if main.is_file():
                texts.append(main.read_text())
                break
        drop_ins: dict[str, Path] = {}
        for d in UNIT_DIRS:
            directory = self.path(f"{d}/{name}.d")
            if directory.is_dir():
                for f in directory.iterdir():
                    if f.name.endswith(".conf") and f.name not in drop_ins:
                        drop_ins[f.name] = f
        texts += [self.path(str(drop_ins[n]).removeprefix(str(self.root))).read_text()
                  for n in sorted(drop_ins)]
        return parse_unit(*texts)

    def environment(self, settings: dict[str, list[str]]) -> dict[str, str]:
        """A service's Environment= and EnvironmentFile= variables."""
        env: dict[str, str] = {}
        for value in settings.get("Environment", []):
            env.update(w.partition("=")[::2] for w in shlex.split(value) if "=" in w)
        for value in settings.get("EnvironmentFile", []):
            optional = value.startswith("-")
            try:
                env.update(parse_environment(self.path(value.lstrip("-")).read_text()))
            except OSError:
                if not optional:
                    raise FjordError(f"EnvironmentFile {value} is missing") from None
        return env


# --- unit files ---------------------------------------------------------------------------


def parse_unit(*texts: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file and its drop-ins, in order: key -> values.
    Continuation lines are joined; an empty assignment (``ExecStart=``) clears the
    values before it, as systemd does."""
    out: dict[str, list[str]] = {}
    for text in texts:
        section = ""
        for line in re.sub(r"\\\n", " ", text).splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "Service" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if value:
                out.setdefault(key, []).append(value)
            else:
                out[key] = []
    return out


def parse_environment(text: str) -> dict[str, str]:
    """An EnvironmentFile: KEY=VALUE lines, comments, optional quotes."""
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value, comments=True) if value.strip() else [""]
        env[key.strip()] = " ".join(words)
    return env


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    may_fail: bool  # the `-` prefix

    def __str__(self) -> str:
        return shlex.join(self.argv)


def commands(settings: dict[str, list[str]], key: str,
             env: dict[str, str] | None = None) -> list[Command]:
    """The commands of ``key`` (ExecStart, ExecStop, ...), variables expanded as systemd
    does (``$NAME`` alone: split into words; ``${NAME}``: in place), no-ops left out."""
    env = env or {}
    out = []
    for value in settings.get(key, []):
        rest = value.lstrip("-@:+!")
        prefix = value[:len(value) - len(rest)]
        argv: list[str] = []
        for word in shlex.split(rest):
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:
                argv += env.get(whole.group(1), "").split()
                continue
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$",
                               lambda m: env.get(m.group(1), "") if m.group(1) else "$",
                               word))
        if argv and argv[0] not in NO_OPS:
            out.append(Command(tuple(argv), "-" in prefix))
    return out


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
    """One server's boot (``run``) or shutdown (``shutdown``); ``report`` collects the
    steps (a reboot passes the shutdown's report on to the boot)."""

    def __init__(self, lab: str, netns: str, holder_pid: int, daemons: ServerDaemons,
                 report: BootReport | None = None) -> None:
        self.lab = lab
        self.netns = netns
        self.root = ServerRoot.of(holder_pid)
        self.daemons = daemons
        self.report = report or BootReport()

    def service(self, unit: str, *keys: str) -> list[str]:
        """Run the unit's commands of ``keys`` on the server as systemd would (its
        environment; a command without `-` that fails ends the step); what ran."""
        settings = self.root.unit(unit)
        env = self.root.environment(settings)
        done = []
        for key in keys:
            for cmd in commands(settings, key, env):
                run(enter_argv(self.lab, "server", list(cmd.argv)), env=env, timeout=300,
                    check=not cmd.may_fail)
                done.append(str(cmd))
        return done

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
        return "; ".join(self.service("nftables.service", "ExecStart")) or "nothing to run"

    def openvswitch(self) -> str:
        if not self.root.enabled("openvswitch-switch.service", "ovs-vswitchd.service"):
            return "openvswitch-switch.service not enabled"
        self.daemons.start_ovs()
        done = self.service("openvswitch-switch.service", "ExecStart")
        return "; ".join(["ovsdb-server, ovs-vswitchd", *done])

    def networking(self) -> str:
        if not self.root.enabled("networking.service"):
            return "networking.service not enabled"
        return "; ".join(self.service("networking.service", "ExecStart")) or "nothing to run"

    def networking_stop(self) -> str:
        if not self.root.enabled("networking.service"):
            return "networking.service not enabled"
        done = self.service("networking.service", "ExecStop", "ExecStopPost")
        return "; ".join(done) or "nothing to run"

    def shutdown(self) -> BootReport:
        """What the units do at shutdown before everything is killed."""
        self.step("shutdown", self.networking_stop)
        return self.report

    def lxcfs(self) -> str:
        if not self.root.enabled("lxcfs.service"):
            return "lxcfs.service not enabled"
        self.daemons.start_lxcfs()
        return "lxcfs (limit-aware /proc for the containers)"

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
        self.step("lxcfs", self.lxcfs)
        self.step("libvirtd", self.libvirtd)
        return self.report
