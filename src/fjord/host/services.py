"""Services: enabled at boot, running now, restarted when their configuration changed.

One `ServiceManager` interface, two environments: systemd on real servers and the
lab's own supervisor on a simulated one. The environment holds the manager
(``Context.env.service_manager``, fjord.environment): the command line chooses it from
FJORD_SERVICE_MANAGER, and the lab's own is handed in by the lab's environment builder
(fjord.lab.environment); never an `if lab:` inside a resource, and nothing here knows
the lab.

How a service learns that its configuration changed in this apply (or in an earlier
one that stopped half-way): fjord records, per service, a digest of the configuration
it last (re)started it with. The service needs a restart when that record differs
from the declared configuration *and* the daemon may be running an older version:
either a file is still to be written, or a file was written after the daemon started.
A daemon started after the last write (by hand, by socket activation) already runs
the declared configuration and is left alone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fjord import runner
from fjord.engine.change import Change
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, DriverKey, Reference, Resource
from fjord.environment import SERVICE_MANAGER, Environment
from fjord.state import read_json, state_dir, write_json

log = logging.getLogger("fjord.host.services")

ENV = SERVICE_MANAGER
DRIVER = "service-manager"
RECORDS = "host-records.json"

Run = Callable[..., runner.Result]


# -- what a resource's configuration is, and what fjord recorded about it ---------------


class Configured(Protocol):
    """Something with a path and a declared content (a File, an edited file)."""

    @property
    def path(self) -> Path: ...

    @property
    def content(self) -> bytes | None: ...


def digest(items: Sequence[Configured]) -> str:
    """One hash over the declared content of ``items`` (absent files count too)."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        h.update(str(item.path).encode() + b"\0")
        h.update(item.content if item.content is not None else b"\0absent\0")
        h.update(b"\0")
    return h.hexdigest()


def actual_digest(items: Sequence[Configured]) -> str:
    """The same hash over what is on disk now."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        h.update(str(item.path).encode() + b"\0")
        try:
            h.update(item.path.read_bytes())
        except FileNotFoundError:
            h.update(b"\0absent\0")
        h.update(b"\0")
    return h.hexdigest()


def _records_path() -> Path:
    return state_dir() / RECORDS


def read_record(key: str) -> str | None:
    data = read_json(_records_path()) or {}
    entry = data.get("records", {}).get(key)
    return entry.get("digest") if isinstance(entry, dict) else None


def write_record(key: str, value: str) -> None:
    data = read_json(_records_path()) or {}
    records = data.get("records") if isinstance(data.get("records"), dict) else {}
    assert isinstance(records, dict)
    records[key] = {"digest": value, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(_records_path(), {"version": 1, "records": records})


class Trigger(Resource):
    """Runs an action when its inputs' declared content differs from what it recorded
    after its last successful run (apt-get update after a sources change, update-grub).

    The record is written only after the action succeeded, so an apply that stopped
    in between runs the action again next time."""

    what = "run"   # the command, as the plan names it: "run apt-get update (...)"
    note = ""      # what the operator should know about it, after why it runs

    def __init__(self, name: str, inputs: Sequence[Configured], *,
                 after: Sequence[Reference] = ()) -> None:
        super().__init__(name)
        self.inputs = list(inputs)
        self.after = tuple(after)

    def pending(self) -> bool:
        return read_record(self.id) != digest(self.inputs)

    def changes(self, ctx: Context) -> list[Change]:
        if not self.pending():
            return []
        why = ("fjord has not run it yet" if read_record(self.id) is None
               else "its inputs changed since its last run")
        note = f"; {self.note}" if self.note else ""
        return [Change(self.id, "update", f"run {self.what} ({why}{note})", self._run)]

    def unchanged_reason(self, ctx: Context) -> str:
        return "inputs unchanged since the last run"

    def _run(self, ctx: Context) -> None:
        want = digest(self.inputs)
        self.action(ctx)
        write_record(self.id, want)

    @abstractmethod
    def action(self, ctx: Context) -> None:
        """The work itself."""


# -- service managers ----------------------------------------------------------------

# `systemctl is-enabled` answers meaning "comes up at boot": "static" units cannot be
# enabled (something else pulls them in), "indirect" ones come with another unit.
AT_BOOT = frozenset({"enabled", "static", "alias", "indirect", "generated"})
# Answers meaning "something would start it at boot (or now, until reboot)".
STARTABLE = frozenset({"enabled", "enabled-runtime", "alias", "generated", "linked",
                       "linked-runtime"})
RUNNING = frozenset({"active", "activating", "reloading"})
# File times come from the kernel's coarse clock (a tick behind) and the start time is
# translated between clocks: a write this close to the start counts as after it.
MTIME_SLACK = 1.0


@dataclass(frozen=True)
class UnitState:
    unit: str
    enabled: str  # the word `systemctl is-enabled` prints ("not-found" when unknown)
    active: str  # the word `systemctl is-active` prints

    @property
    def at_boot(self) -> bool:
        return self.enabled in AT_BOOT

    @property
    def startable(self) -> bool:
        return self.enabled in STARTABLE

    @property
    def running(self) -> bool:
        return self.active in RUNNING


class ServiceManager(Protocol):
    """What fjord needs from an init system. The lab's supervisor implements the same
    (the lab's LabServiceManager): units it does not supervise answer
    enabled="not-found", active="inactive"."""

    name: str

    def state(self, unit: str) -> UnitState: ...

    def started_at(self, unit: str) -> float | None:
        """When the unit's main process started (epoch seconds); None if unknown."""
        ...

    def enable(self, unit: str) -> None: ...

    def disable(self, unit: str) -> None: ...

    def start(self, unit: str) -> None: ...

    def stop(self, unit: str) -> None: ...

    def restart(self, unit: str) -> None: ...


NO_SYSTEMD_SIGNS = ("has not been booted with systemd", "Failed to connect to bus",
                    "System has not been booted")


class SystemdManager:
    """systemctl, with argument lists. ``run`` is injectable for tests.

    A unit's state is read once and kept until :meth:`forget` (apply drops every
    driver's cache after a change; a change through this manager forgets by itself)."""

    name = "systemd"

    def __init__(self, run: Run = runner.run) -> None:
        self._run = run
        self._states: dict[str, UnitState] = {}

    def forget(self) -> None:
        self._states.clear()

    def _systemctl(self, *args: str, check: bool = True) -> runner.Result:
        return self._run(["systemctl", *args], check=check,
                         hint="see `journalctl -xeu UNIT` for the unit's own messages")

    def _change(self, *args: str) -> None:
        self.forget()
        try:
            self._systemctl(*args)
        finally:
            self.forget()

    def _word(self, verb: str, unit: str) -> str:
        res = self._systemctl(verb, unit, check=False)
        word = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
        if word:
            return word
        if any(sign in res.stderr for sign in NO_SYSTEMD_SIGNS):
            raise StateUnreadable(
                f"systemd is not running here ({res.stderr.strip().splitlines()[0]})",
                hint=f"on a simulated server set {ENV}=lab",
            )
        if "No such file or directory" in res.stderr or "not-found" in res.stderr:
            return "not-found"
        raise StateUnreadable(
            f"`systemctl {verb} {unit}` gave no answer: {res.stderr.strip() or res.returncode}"
        )

    def state(self, unit: str) -> UnitState:
        if unit not in self._states:
            self._states[unit] = UnitState(unit, self._word("is-enabled", unit),
                                           self._word("is-active", unit))
        return self._states[unit]

    def started_at(self, unit: str) -> float | None:
        res = self._systemctl("show", "--property=ExecMainStartTimestampMonotonic",
                              "--value", unit, check=False)
        try:
            micros = int(res.stdout.strip())
        except ValueError:
            return None
        if micros <= 0:
            return None
        # systemd's monotonic clock is CLOCK_MONOTONIC, as is Python's; file mtimes are
        # wall-clock, so translate.
        return time.time() - (time.monotonic() - micros / 1e6)

    def enable(self, unit: str) -> None:
        # A masked unit cannot be enabled; unmasking an unmasked unit changes nothing.
        self._change("unmask", unit)
        self._change("enable", unit)

    def disable(self, unit: str) -> None:
        self._change("disable", unit)

    def start(self, unit: str) -> None:
        self._change("start", unit)

    def stop(self, unit: str) -> None:
        self._change("stop", unit)

    def restart(self, unit: str) -> None:
        self._change("restart", unit)


def open_manager(env: Environment) -> ServiceManager:
    """The init system ``env`` names: systemd, or the factory the command line handed in
    (the lab's)."""
    if env.service_manager is not None:
        return env.service_manager()
    return SystemdManager()


SERVICES: DriverKey[ServiceManager] = DriverKey(DRIVER, open_manager)


def manager(ctx: Context) -> ServiceManager:
    """The environment's service manager (one per plan or apply)."""
    return ctx.open(SERVICES)


# -- the resource --------------------------------------------------------------------


class Service(Resource):
    """A unit enabled (or not) at boot and running (or not), restarted when the
    configuration in ``config`` changed since fjord last (re)started it.

    ``socket``: a socket-activated daemon (libvirtd) counts as running while its socket
    listens; it starts on the first connection and may exit when idle."""

    kind = "service"

    def __init__(self, unit: str, *, enabled: bool = True, running: bool = True,
                 socket: str | None = None, config: Sequence[Configured] = (),
                 reason: str = "", after: Sequence[Reference] = (),
                 ready: Callable[[], None] | None = None) -> None:
        super().__init__(unit)
        self.unit = unit
        self.enabled = enabled
        self.running = running
        self.socket = socket
        self.config = list(config)
        self.reason = reason
        self.after = tuple(after)
        # after a (re)start: returns once the daemon serves (raises when it does not)
        self.ready = ready

    def changes(self, ctx: Context) -> list[Change]:
        mgr = manager(ctx)
        st = mgr.state(self.unit)
        why = f" ({self.reason})" if self.reason else ""
        out: list[Change] = []
        if self.enabled and not st.at_boot:
            out.append(Change(self.id, "update", f"enable {self.unit} at boot{why}; is "
                              f"{st.enabled}", lambda ctx: manager(ctx).enable(self.unit)))
        elif not self.enabled and st.startable:
            out.append(Change(self.id, "update", f"disable {self.unit}{why}; is {st.enabled}",
                              lambda ctx: manager(ctx).disable(self.unit)))
        if self.running:
            out += self._keep_running(ctx, mgr, st)
        elif st.running:
            out.append(Change(self.id, "update", f"stop {self.unit}{why}; is {st.active}",
                              lambda ctx: manager(ctx).stop(self.unit)))
        return out

    def _keep_running(self, ctx: Context, mgr: ServiceManager, st: UnitState) -> list[Change]:
        if st.active != "active":
            if self.socket and mgr.state(self.socket).active == "active":
                return []  # starts, with the configuration on disk, on first connection
            return [Change(self.id, "update", f"start {self.unit} (is {st.active})",
                           self._start)]
        because = self.restart_reason(mgr)
        if because is None:
            return []
        return [Change(self.id, "update", f"restart {self.unit} ({because})", self._restart)]

    def restart_reason(self, mgr: ServiceManager) -> str | None:
        """Why the running daemon may not run the declared configuration (None: it does)."""
        if not self.config:
            return None
        want = digest(self.config)
        if read_record(self.id) == want:
            return None
        if actual_digest(self.config) != want:
            changing = [str(c.path) for c in self.config if _on_disk(c.path) != c.content]
            return f"{', '.join(changing)} will change"
        started = mgr.started_at(self.unit)
        written = [c.path.stat().st_mtime for c in self.config if c.path.exists()]
        if started is None:
            return "its configuration changed and its start time is unknown"
        if written and max(written) >= started - MTIME_SLACK:
            return "its configuration was written after it started"
        return None

    def unchanged_reason(self, ctx: Context) -> str:
        boot = "enabled" if self.enabled else "disabled"
        now = "running" if self.running else "stopped"
        extra = " with the declared configuration" if self.config else ""
        return f"{self.unit} {boot} and {now}{extra}"

    def _record(self) -> None:
        if self.config:
            write_record(self.id, digest(self.config))

    def _start(self, ctx: Context) -> None:
        manager(ctx).start(self.unit)
        if self.ready is not None:
            self.ready()
        self._record()

    def _restart(self, ctx: Context) -> None:
        manager(ctx).restart(self.unit)
        if self.ready is not None:
            self.ready()
        self._record()


def _on_disk(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
