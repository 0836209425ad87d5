"""Moving the uplink into the external bridge without locking the owner out.

The sequence is short (OVS port, addresses, routes by netlink), then the gateways are
verified (neighbour resolution and ping). Before anything moves, the previous state is
written to /var/lib/fjord/switchover.json and a guard process is started in its own
session: unless the switchover is confirmed before the deadline, the guard restores
that state — also when fjord itself was killed. Confirmation comes from this apply once
verification passed, or, with --confirm-timeout, from `fjord confirm` (better proof: it
shows a new SSH connection works).

ifupdown's state (/run/network/ifstate*) moves with the links: afterwards it records the
bridges and the uplink up as a boot with the new /etc/network/interfaces would, so that
the first shutdown's `ifdown -a` does what every later one does; a rollback puts the
provider's record back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

from fjord.environment import current
from fjord.errors import FjordError
from fjord.net import interfaces, uplink_filter
from fjord.net.links import Netlink
from fjord.net.switch import LinuxBridgeSwitch, OvsSwitch
from fjord.runner import alive, child_env, run
from fjord.state import atomic_write, state_dir

log = logging.getLogger("fjord.switchover")

STATE = "switchover.json"
CONFIRM = "switchover.confirmed"
# Held by the apply that runs a switchover and by its guard (the same open file, handed
# to the guard before it starts): while either lives, no other switchover can begin, even
# if fjord was killed before it could write the guard's PID down.
LOCK = "switchover.lock"
# Moving and verifying take a few seconds (three pings per gateway at most); the guard
# waits that long, plus the operator's confirmation time when one is asked for.
VERIFY_SECONDS = 8.0


def state_path() -> Path:
    return state_dir() / STATE


def confirm_path() -> Path:
    return state_dir() / CONFIRM


@dataclass
class Snapshot:
    """What the host looked like before the switchover: enough to put it back exactly."""

    uplink: str
    bridge: str
    switch_kind: str
    netdev: bool
    uplink_addresses: list[str]
    bridge_addresses: list[str]
    routes: dict[str, dict[str, str | None] | None]  # "4"/"6" -> {gateway, dev}
    uplink_was_port: bool
    guard_was_loaded: bool
    deadline: float = 0.0
    guard_pid: int | None = None
    ovsdb: str | None = field(default=None)
    # ifupdown's state files (name -> content, None: absent), see interfaces.read_ifstate
    ifstate: dict[str, str | None] | None = None
    # the IPv4 gateway when it is outside the host's network (on-link, Hetzner Cloud's
    # /32): the default route back needs a link route to it on the uplink again
    onlink_gateway4: str | None = None

    def save(self) -> None:
        atomic_write(state_path(), json.dumps(asdict(self), indent=2).encode(), 0o600)

    @classmethod
    def load(cls, path: Path | None = None) -> Snapshot:
        return cls(**json.loads((path or state_path()).read_text()))


@dataclass(frozen=True)
class Target:
    uplink: str
    bridge: str
    switch_kind: str
    netdev: bool
    addresses: list[str]
    gateway4: str
    gateway6: str | None
    # what `ifup -a` with the new /etc/network/interfaces records up, in its order: the
    # switchover leaves ifupdown's state so, and the next shutdown's `ifdown -a` acts on
    # them as on every later one (interfaces.raised_at_boot)
    ifup: tuple[str, ...] = ()
    # the IPv4 gateway is outside the host's network (host.ipv4.gateway_onlink, a /32):
    # the bridge gets a link-scope host route to it, and the default route via it
    onlink4: bool = False


def _switch(kind: str, ovsdb: str | None = None) -> Any:
    return OvsSwitch(ovsdb) if kind == "ovs" else LinuxBridgeSwitch()


def snapshot(nl: Netlink, sw: Any, t: Target) -> Snapshot:
    routes: dict[str, dict[str, str | None] | None] = {}
    for fam, key in ((socket.AF_INET, "4"), (socket.AF_INET6, "6")):
        r = nl.default_route(fam)
        routes[key] = {"gateway": r.gateway, "dev": r.dev} if r else None
    return Snapshot(
        uplink=t.uplink, bridge=t.bridge, switch_kind=t.switch_kind, netdev=t.netdev,
        uplink_addresses=sorted(str(a) for a in nl.addresses(t.uplink)),
        bridge_addresses=sorted(str(a) for a in nl.addresses(t.bridge)),
        routes=routes,
        uplink_was_port=sw.port_bridge(t.uplink) == t.bridge,
        guard_was_loaded=uplink_filter.loaded() if t.netdev else False,
        ovsdb=getattr(sw, "socket", None),
        ifstate=interfaces.read_ifstate([*t.ifup, t.uplink]) if t.ifup else None,
        onlink_gateway4=t.gateway4 if t.onlink4 else None,
    )


def move(nl: Netlink, sw: Any, t: Target, before: Snapshot) -> None:
    """Uplink into the bridge, addresses and default routes onto the bridge.

    The bridge gets the addresses before it gets the uplink (harmless: the uplink still
    answers), so that the moment the uplink joins, the bridge answers at once."""
    nl.set_up(t.bridge)
    # Every address the uplink had moves too: none is lost, declared ones are ensured.
    wanted = {ip_interface(a) for a in t.addresses} | {
        ip_interface(a) for a in before.uplink_addresses}
    for addr in sorted(wanted, key=str):
        nl.add_address(t.bridge, addr)
    if t.netdev:
        uplink_filter.check(t.uplink)
    sw.add_port(t.bridge, t.uplink)
    if t.netdev:
        # Right after the port is added, not before: a few duplicate replies instead of
        # a few lost frames.
        uplink_filter.load(t.uplink, checked=True)
    nl.set_up(t.uplink)
    if t.onlink4:
        # the gateway is outside the bridge's network: a host route to it on the bridge
        # (it replaces the uplink's, of its `pointopoint` peer or an `ip route add`)
        nl.replace_route(f"{t.gateway4}/32", t.bridge, link_scope=True)
    nl.replace_default(socket.AF_INET, ip_address(t.gateway4), t.bridge, onlink=t.onlink4)
    if t.gateway6:
        nl.replace_default(socket.AF_INET6, ip_address(t.gateway6), t.bridge)
    for addr in nl.addresses(t.uplink):
        nl.delete_address(t.uplink, addr)
    if t.onlink4:
        # a route to the gateway left on the uplink, now a bridge port, would send the
        # gateway's traffic past the bridge
        _drop_gateway_route(nl, t.gateway4, t.uplink)
    if t.ifup:
        # ifupdown still records the uplink under the provider's stanza and knows
        # nothing of the bridges: record what a boot with the new file would
        _record_ifstate(t)


def _record_ifstate(t: Target) -> None:
    down = [] if t.uplink in t.ifup else [t.uplink]
    try:
        interfaces.record_up(t.ifup, down)
    except OSError as exc:  # a state file, not the network: no reason to roll back
        log.warning("could not update ifupdown's state in %s: %s", interfaces.IFSTATE_DIR,
                    exc)


def restore(before: Snapshot) -> None:
    """Put links, addresses, routes and ports back as they were in ``before``.

    Ordered so that something always answers: the uplink gets its addresses back and the
    guard goes (for a moment both answer), routes and addresses leave the bridge, and
    only then does the uplink leave it. ifupdown's state files go back first (files
    only: nothing answers differently)."""
    if before.ifstate is not None:
        try:
            interfaces.restore_ifstate(before.ifstate)
        except OSError as exc:
            log.warning("could not restore ifupdown's state: %s", exc)
    nl = Netlink()
    sw = _switch(before.switch_kind, before.ovsdb)
    try:
        nl.set_up(before.uplink)
        have = nl.addresses(before.uplink)
        for addr in before.uplink_addresses:
            if ip_interface(addr) not in have:  # a point-to-point one may still be there
                nl.add_address(before.uplink, ip_interface(addr))
        if before.netdev and not before.guard_was_loaded:
            uplink_filter.unload()
        for key, fam in (("4", socket.AF_INET), ("6", socket.AF_INET6)):
            r = before.routes.get(key)
            if r and r.get("gateway") and r.get("dev"):
                gw, dev = ip_address(str(r["gateway"])), str(r["dev"])
                onlink = key == "4" and _outside(gw, before, dev)
                if onlink:
                    # a gateway outside the restored addresses (a /32 whose peer, or
                    # route to the gateway, went with the move): its link route first
                    nl.replace_route(f"{gw}/32", dev, link_scope=True)
                nl.replace_default(fam, gw, dev, onlink=onlink)
        moved = before.onlink_gateway4  # the bridge's route to the declared gateway
        if moved is not None and nl.link(before.bridge) is not None:
            r = before.routes.get("4") or {}
            if not (r.get("dev") == before.bridge and r.get("gateway") == moved):
                _drop_gateway_route(nl, moved, before.bridge)
        keep = {ip_interface(a) for a in before.bridge_addresses}
        if nl.link(before.bridge) is not None:
            for addr in nl.addresses(before.bridge) - keep:
                nl.delete_address(before.bridge, addr)
        if not before.uplink_was_port and sw.port_bridge(before.uplink) == before.bridge:
            sw.delete_port(before.uplink, before.bridge)
    finally:
        nl.close()
        sw.close()


def _outside(gateway: Any, before: Snapshot, dev: str) -> bool:
    """Whether ``gateway`` is outside every IPv4 network ``dev`` had before."""
    addrs = before.uplink_addresses if dev == before.uplink else \
        before.bridge_addresses if dev == before.bridge else []
    nets = [ip_interface(a).network for a in addrs if ip_interface(a).version == 4]
    return bool(nets) and not any(gateway in n for n in nets)


def _drop_gateway_route(nl: Netlink, gateway: str, dev: str) -> None:
    for r in nl.routes(socket.AF_INET, dev=dev):
        if r.dst == f"{gateway}/32" and r.gateway is None:
            nl.delete_route(r.dst, dev)


def verify(t: Target, attempts: int = 3) -> tuple[bool, str]:
    """Can the host reach its gateways through the bridge? (ARP/NDP, then echo.)"""
    checks = [("IPv4 gateway", ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", t.bridge,
                                t.gateway4])]
    if t.gateway6:
        gw6 = t.gateway6 + (f"%{t.bridge}" if ip_address(t.gateway6).is_link_local else "")
        checks.append(("IPv6 gateway", ["ping", "-6", "-n", "-q", "-c", "1", "-W", "1",
                                        "-I", t.bridge, gw6]))
    failed = []
    for name, argv in checks:
        for _ in range(attempts):
            if run(argv, check=False, timeout=5).ok:
                break
        else:
            failed.append(f"{name} {argv[-1]} does not answer")
    return (not failed, "; ".join(failed) or "gateways answer")


def start_guard(deadline: float, lock_fd: int | None = None) -> int:
    """A process in its own session that outlives fjord and rolls back at the deadline.
    ``lock_fd``: the switchover lock, which the guard then holds for its whole life."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fjord.net.switchover_guard", str(state_path()), str(deadline)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(state_dir() / "guard.log", "ab"),
        start_new_session=True, close_fds=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
        env=child_env(current().variables()),
    )
    return proc.pid


def take_lock() -> int:
    """The switchover lock (an open file descriptor), or FjordError when a switchover or
    its guard still holds it."""
    path = state_dir() / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FjordError("a switchover is already pending confirmation",
                         hint="run `fjord confirm`, or wait for its guard to roll back "
                         f"(up to {VERIFY_SECONDS:.0f} s, or the --confirm-timeout)") from None
    return fd


def guard_waiting() -> bool:
    """Whether a switchover, or the guard of one, still holds the lock."""
    try:
        os.close(take_lock())
    except FjordError:
        return True
    return False


def confirm() -> bool:
    """Mark the pending switchover as confirmed; False when none is pending."""
    if not state_path().exists():
        return False
    atomic_write(confirm_path(), f"{time.time()}\n".encode(), 0o600)
    return True


def wait_confirmed(deadline: float) -> bool:
    while time.time() < deadline:
        if confirm_path().exists():
            return True
        time.sleep(0.1)
    return confirm_path().exists()


def finish() -> None:
    for p in (state_path(), confirm_path()):
        p.unlink(missing_ok=True)


def pending() -> Snapshot | None:
    try:
        return Snapshot.load()
    except (FileNotFoundError, ValueError, TypeError):
        return None


def execute(t: Target, *, confirm_timeout: float | None, prompt: Any = None) -> None:
    """Run the switchover with its safety net; raise FjordError after a rollback."""
    lock = take_lock()
    try:
        _execute(t, lock, confirm_timeout=confirm_timeout, prompt=prompt)
    finally:
        os.close(lock)


def _execute(t: Target, lock: int, *, confirm_timeout: float | None, prompt: Any) -> None:
    old = pending()
    if old is not None and old.guard_pid and alive(old.guard_pid):
        raise FjordError("a switchover is already pending confirmation",
                         hint="run `fjord confirm`, or wait for its guard to roll back")
    finish()
    nl = Netlink()
    sw = _switch(t.switch_kind)
    try:
        before = snapshot(nl, sw, t)
        before.deadline = time.time() + VERIFY_SECONDS
        before.save()
        before.guard_pid = start_guard(before.deadline, lock)
        before.save()
        try:
            move(nl, sw, t, before)
            ok, detail = verify(t)
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if ok and confirm_timeout:
            # The guard re-reads the deadline: from now on it is the operator's time.
            before.deadline = time.time() + confirm_timeout
            before.save()
            if prompt is not None:
                prompt(confirm_timeout)
            ok = wait_confirmed(before.deadline)
            detail = "confirmed" if ok else f"not confirmed within {confirm_timeout:.0f} s"
        if not ok:
            _stop_guard(before.guard_pid)
            restore(before)
            finish()
            raise FjordError(
                f"switchover of {t.uplink} into {t.bridge} rolled back: {detail}",
                hint="the host is back on its previous addresses and routes; check the "
                     "gateways in the file (host.ipv4.gateway, host.ipv6.gateway)",
            )
        confirm()
        _stop_guard(before.guard_pid)
        finish()
    finally:
        nl.close()
        sw.close()


def _stop_guard(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, 15)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
