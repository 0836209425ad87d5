"""Container checks for `fjord check`: what an owner proves by hand after a change.

Probes inside a container run in its namespaces and its cgroups (:class:`Inside`); each
has its own timeout and becomes one line (fjord.check.probe, fjord.check.guard)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from fjord.config.desired import Container, Desired
from fjord.containers import customize, limits, rootfs
from fjord.containers.domain import domain_for
from fjord.containers.libvirt import Libvirt, init_pid
from fjord.containers.lifecycle import container_env
from fjord.containers.nsexec import helper_argv
from fjord.containers.tree import Refused
from fjord.errors import FjordError
from fjord.probes import (
    PING_TIMEOUT,
    PROBE_TIMEOUT,
    CheckResult,
    Probe,
    collect,
    guard,
    one_line,
    ping,
    probe,
)
from fjord.state import state_dir

SYSTEMD_TIMEOUT = 60.0  # a container that has just started may still be booting
SSH_TIMEOUT = 20.0
FORWARD_TIMEOUT = 3.0


def targets(desired: Desired) -> tuple[str | None, str | None, str]:
    chk = desired.host.check
    v4 = chk.ipv4 or next((a for a in desired.host.dns if isinstance(a, IPv4Address)), None)
    v6 = chk.ipv6 or next((a for a in desired.host.dns if isinstance(a, IPv6Address)), None)
    return (str(v4) if v4 else None, str(v6) if v6 else None, chk.name)


class Inside:
    """Probes run in a running container: its namespaces (nsenter) and its cgroups, from
    the probe's first instruction on (so that they are under its limits, are counted
    as its processes, and are found there), each with its own timeout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = init_pid(name)
        if self.pid is None:
            raise FjordError(f"container {name} is not running",
                             hint=f"start it: fjord container start {name}")
        self.cgroups = limits.cgroup_procs(self.pid)

    def argv(self, argv: list[str]) -> list[str]:
        # the container's programs run with no more than its init's capabilities, like
        # `fjord container exec`: a tenant's /usr/bin/systemctl is not run as host root

        assert self.pid is not None
        return helper_argv(self.pid, argv)

    def run(self, argv: list[str], timeout: float = PROBE_TIMEOUT) -> Probe:
        return probe(self.argv(argv), timeout=timeout, env=container_env(),
                     cgroups=self.cgroups)


def ssh_argv(c: Container, *extra: str) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={state_dir() / 'known_hosts'}", *extra,
            f"root@{c.ipv4}"]


def declared_macs(desired: Desired, c: Container) -> dict[str, str]:
    """Each of the container's links (its name inside) and the MAC its domain gives it."""
    return {i.guest: i.mac for i in domain_for(c, desired, Path("/")).interfaces}


def _macs(inside: Inside, declared: dict[str, str]) -> tuple[bool, str]:
    """The MACs its links have, read in its network namespace with the host's own `ip`
    (nothing of the tenant's runs). br-int's port flows let a container send only from
    its declared MAC: a link with another one is cut off (udev's MAC policy gave a
    container another one on Debian 12, racing libvirt: fjord.host.system.VETH_LINK)."""
    assert inside.pid is not None
    out = probe(["nsenter", f"--target={inside.pid}", "--net", "ip", "-json", "link", "show"])
    if not out.ok:
        return False, f"cannot list its links: {out.last_line()}"
    try:
        have = {link["ifname"]: str(link.get("address", "")).lower()
                for link in json.loads(out.stdout)}
    except (ValueError, KeyError, TypeError):
        return False, f"`ip -json link` printed no list of links: {out.last_line()}"
    wrong = [f"{name} has {have[name]}" if name in have else f"no {name}"
             for name, mac in sorted(declared.items()) if have.get(name) != mac.lower()]
    if wrong:
        return False, (f"{', '.join(wrong)}; declared: "
                       + ", ".join(f"{n} {m}" for n, m in sorted(declared.items()))
                       + ". br-int drops what a container sends from another MAC: restart "
                       f"it (fjord container restart {inside.name})")
    return True, ", ".join(f"{n} {m}" for n, m in sorted(declared.items()))


def container_checks(desired: Desired) -> Iterator[CheckResult]:
    v4, v6, name = targets(desired)
    lv = Libvirt()
    try:
        for c in desired.containers:
            yield from collect(f"container {c.name}", _container(lv, desired, c, v4, v6, name))
    finally:
        with contextlib.suppress(Exception):
            lv.close()
    yield from collect("forwards", forward_checks(desired))


def _container(lv: Libvirt, desired: Desired, c: Container, v4: str | None,
               v6: str | None, name: str) -> Iterator[CheckResult]:
    label = f"container {c.name}"
    try:
        state = lv.domain(c.name)
    except FjordError as exc:
        # libvirtd down or unreachable: say so for each container, and go on with what
        # can still be checked (the port forwards)
        yield CheckResult(f"{label}: running", False,
                          f"cannot ask libvirt ({exc.message}): is libvirtd running? "
                          "`fjord apply` starts it")
        return
    if c.state == "stopped":
        if state is None:
            yield CheckResult(f"{label}: stopped, as declared", False,
                              "not defined: run `fjord apply`")
        elif state.running:
            yield CheckResult(f"{label}: stopped, as declared", False,
                              "it runs: `fjord apply` shuts it down (or declare `state: "
                              "running`)")
        else:
            yield CheckResult(f"{label}: stopped, as declared", True,
                              "defined, not running, not started at boot")
        return
    if state is None or not state.running:
        why = "not defined" if state is None else "not running"
        if state is not None and not c.autostart:
            why += " (autostart is off: it does not start at boot; declare `state: " \
                   "stopped` to keep it stopped)"
        yield CheckResult(f"{label}: running", False,
                          f"{why}: run `fjord apply` or `fjord container start {c.name}`")
        return
    try:
        inside = Inside(c.name)
    except FjordError as exc:
        yield CheckResult(f"{label}: running", False,
                          f"libvirt says it runs, but it cannot be entered: {one_line(exc)}")
        return
    yield guard(f"{label}: systemd running", lambda: _systemd(inside))
    for what, ok, detail in limits.verdicts(c.name, expected=c.memory):
        yield CheckResult(f"{label}: {what}", ok, detail)
    yield guard(f"{label}: its root's files can be read", lambda: _root_files(desired, c))

    yield guard(f"{label}: its links have their declared MACs",
                lambda: _macs(inside, declared_macs(desired, c)))

    def answers() -> tuple[bool, str]:
        ok, detail = ping(str(c.ipv4))
        return ok, detail if ok else f"{detail}; look at br-int and the container's eth0"

    yield guard(f"{label}: answers ping on {c.ipv4}", answers)
    if c.ssh_keys:
        yield guard(f"{label}: ssh with the configured key", lambda: _ssh_key(c))
        yield guard(f"{label}: password login refused", lambda: _ssh_password(c))
    if v4:
        yield guard(f"{label}: reaches {v4} over IPv4 (NAT)", lambda: _reach(
            inside, v4, False, "look at NAT (nft list table inet fjord) and the host's IPv4 "
            "gateway"))
    if c.ipv6 is not None and v6:
        yield guard(f"{label}: reaches {v6} over IPv6", lambda: _reach(
            inside, v6, True, f"look at the route and proxy NDP entry for {c.ipv6}"))
    yield guard(f"{label}: resolves {name}", lambda: _resolve(inside, name))


def _root_files(desired: Desired, c: Container) -> tuple[bool, str]:
    """What fjord reads in the container's root (see fjord.containers.tree): refused
    when its root user put a FIFO, a device or a huge file where fjord reads one."""
    layout = rootfs.RootfsLayout.of(c.name)
    record = rootfs.read_record(layout)
    if record is None or (record.mode == "overlay" and not rootfs.mounted(layout.rootfs)):
        return True, "not looked at: its root is not mounted here (`fjord plan` says more)"
    try:
        todo = customize.pending(layout.rootfs, c, desired)
    except Refused as exc:
        return False, exc.message
    if todo:
        return True, f"readable; `fjord apply` rewrites {', '.join(todo)}"
    return True, "readable, as fjord wrote them"


def _systemd(inside: Inside) -> tuple[bool, str]:
    out = inside.run(["systemctl", "is-system-running", "--wait"], timeout=SYSTEMD_TIMEOUT)
    if out.ok:
        return True, out.last_line()
    if out.timed_out:
        detail = f"systemd has not finished starting after {SYSTEMD_TIMEOUT:g} s"
    else:
        detail = f"systemd is {out.last_line()}"
    failed = inside.run(["systemctl", "--failed", "--plain", "--no-legend"])
    units = " ".join(line.split()[0] for line in failed.stdout.splitlines() if line.split())
    listed = units or ("none listed" if failed.ok else f"cannot list them: "
                       f"{failed.last_line()}")
    return False, (f"{detail}; failed units: {listed} (fjord container exec "
                   f"{inside.name} -- journalctl -b)")


def _ssh_key(c: Container) -> tuple[bool, str]:
    out = probe([*ssh_argv(c), "true"], timeout=SSH_TIMEOUT)
    if out.ok:
        return True, "root login with a key works"
    return False, f"{out.last_line()} (this host needs the private half of a key in ssh_keys)"


def _ssh_password(c: Container) -> tuple[bool, str]:
    out = probe([*ssh_argv(c, "-o", "PreferredAuthentications=password,"
                             "keyboard-interactive", "-o", "PubkeyAuthentication=no"),
                 "true"], timeout=SSH_TIMEOUT)
    if out.failure is not None:
        return False, f"cannot tell: {out.failure}"
    if not out.ok and "Permission denied" in out.stderr:
        return True, "only keys are accepted"
    return False, f"password login was not refused: {out.last_line()}"


def _reach(inside: Inside, target: str, v6: bool, look: str) -> tuple[bool, str]:
    out = inside.run(["ping", "-6" if v6 else "-4", "-n", "-q", "-c", "2", "-i", "0.2",
                      "-W", "2", target], timeout=PING_TIMEOUT)
    if out.ok:
        return True, out.last_line()
    summary = next((line.strip() for line in out.stdout.splitlines() if "transmitted" in line),
                   out.last_line())
    return False, f"{summary}; {look}"


def _resolve(inside: Inside, name: str) -> tuple[bool, str]:
    out = inside.run(["getent", "hosts", name])
    if out.ok:
        return True, out.last_line()
    if out.timed_out:
        return False, (f"no answer for {name} after {PROBE_TIMEOUT:g} s: its name servers do "
                       "not answer; look at its /etc/resolv.conf, host.dns, and whether the "
                       "container reaches them (NAT, the firewall)")
    why = out.last_line() if out.failure or out.stdout.strip() or out.stderr.strip() else \
        "no such name"
    return False, (f"cannot resolve {name} ({why}): look at its /etc/resolv.conf and "
                   "host.dns")


def forward_checks(desired: Desired) -> Iterator[CheckResult]:
    public = str(desired.host.ipv4.address.ip)
    stopped = {c.name for c in desired.containers if c.state == "stopped"}
    for fwd in desired.host.forwards:
        label = f"forward {fwd.protocol}/{fwd.port} -> {fwd.container}:{fwd.target_port}"
        if fwd.container in stopped:
            yield CheckResult(label, True, f"not checked: {fwd.container} is declared "
                              "stopped; the DNAT rule is in the ruleset")
            continue
        if fwd.protocol != "tcp":
            yield CheckResult(label, True, "udp: not checkable without the service's "
                              "protocol; the DNAT rule is in the ruleset")
            continue
        yield guard(label, partial(_connect, public, fwd.port, fwd.target_port,
                                   fwd.container))


def _connect(public: str, port: int, target: int, container: str) -> tuple[bool, str]:
    try:
        with socket.create_connection((public, port), timeout=FORWARD_TIMEOUT):
            pass
    except OSError as exc:
        return False, (f"{public}:{port}: {exc.strerror or exc}; is the service listening "
                       f"on port {target} in {container}?")
    return True, f"a TCP connection to {public}:{port} reached the container"
