"""Container checks for `fjord check`: what an owner proves by hand after a change."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

from fjord.check import CheckResult, ping
from fjord.config.desired import Container, Desired
from fjord.containers.libvirt import Libvirt
from fjord.containers.lifecycle import container_env, exec_argv
from fjord.errors import FjordError
from fjord.runner import run
from fjord.state import state_dir


def _targets(desired: Desired) -> tuple[str | None, str | None, str]:
    chk = desired.host.check
    v4 = chk.ipv4 or next((a for a in desired.host.dns if isinstance(a, IPv4Address)), None)
    v6 = chk.ipv6 or next((a for a in desired.host.dns if isinstance(a, IPv6Address)), None)
    return (str(v4) if v4 else None, str(v6) if v6 else None, chk.name)


def inside(name: str, argv: list[str], timeout: float = 15) -> tuple[bool, str]:
    out = run(exec_argv(name, argv), check=False, timeout=timeout, env=container_env())
    text = (out.stdout.strip() or out.stderr.strip()).splitlines()
    return out.ok, (text[-1] if text else f"exit status {out.returncode}")


def ssh_argv(c: Container, *extra: str) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={state_dir() / 'known_hosts'}", *extra,
            f"root@{c.ipv4}"]


def container_checks(desired: Desired) -> Iterator[CheckResult]:
    v4, v6, name = _targets(desired)
    lv = Libvirt()
    try:
        for c in desired.containers:
            try:
                lv.domain(c.name)
            except FjordError as exc:
                # libvirtd down or unreachable: say so for each container, and go on
                # with what can still be checked (the port forwards)
                yield CheckResult(f"container {c.name}: running", False,
                                  f"cannot ask libvirt ({exc.message}): is libvirtd "
                                  "running? `fjord apply` starts it")
                continue
            yield from _one(lv, desired, c, v4, v6, name)
    finally:
        lv.close()
    yield from forward_checks(desired)


def _one(lv: Libvirt, desired: Desired, c: Container, v4: str | None, v6: str | None,
         name: str) -> Iterator[CheckResult]:
    label = f"container {c.name}"
    state = lv.domain(c.name)
    if state is None or not state.running:
        why = "not defined" if state is None else "not running"
        yield CheckResult(f"{label}: running", False,
                          f"{why}: run `fjord apply` or `fjord container start {c.name}`")
        return
    ok, detail = inside(c.name, ["systemctl", "is-system-running", "--wait"], timeout=60)
    if not ok:
        _, failed = inside(c.name, ["sh", "-c", "systemctl --failed --plain --no-legend "
                                    "| cut -d' ' -f1 | tr '\\n' ' '"])
        detail = f"systemd is {detail}; failed units: {failed or 'none listed'}"
    yield CheckResult(f"{label}: systemd running", ok,
                      detail if ok else detail + f" (fjord container exec {c.name} -- "
                      "journalctl -b)")
    from fjord.containers.limits import cgroups_private, limits_enforced

    ok, detail = limits_enforced(c.name, expected=c.memory)
    yield CheckResult(f"{label}: memory limit enforced", ok,
                      detail if ok else detail + " (see docs/containers.md: limits and cgroups)")
    ok, detail = cgroups_private(c.name)
    yield CheckResult(f"{label}: sees only its own cgroups", ok, detail)
    ok, detail = ping(str(c.ipv4))
    yield CheckResult(f"{label}: answers ping on {c.ipv4}", ok,
                      detail if ok else f"{detail}; look at br-int and the container's eth0")
    if c.ssh_keys:
        out = run([*ssh_argv(c), "true"], check=False, timeout=20)
        yield CheckResult(f"{label}: ssh with the configured key", out.ok,
                          "root login with a key works" if out.ok else
                          f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"
                          " (this host needs the private half of a key in ssh_keys)")
        out = run([*ssh_argv(c, "-o", "PreferredAuthentications=password,"
                                  "keyboard-interactive", "-o", "PubkeyAuthentication=no"),
                   "true"], check=False, timeout=20)
        refused = not out.ok and "Permission denied" in out.stderr
        yield CheckResult(f"{label}: password login refused", refused,
                          "only keys are accepted" if refused else
                          f"password login was not refused: {out.stderr.strip()}")
    if v4:
        ok, detail = inside(c.name, ["ping", "-4", "-n", "-q", "-c", "2", "-i", "0.2",
                                     "-W", "2", v4])
        yield CheckResult(f"{label}: reaches {v4} over IPv4 (NAT)", ok,
                          detail if ok else f"{detail}; look at NAT (nft list table inet "
                          "fjord) and the host's IPv4 gateway")
    if c.ipv6 is not None and v6:
        ok, detail = inside(c.name, ["ping", "-6", "-n", "-q", "-c", "2", "-i", "0.2",
                                     "-W", "2", v6])
        yield CheckResult(f"{label}: reaches {v6} over IPv6", ok,
                          detail if ok else f"{detail}; look at the route and proxy NDP "
                          f"entry for {c.ipv6}")
    ok, detail = inside(c.name, ["getent", "hosts", name])
    yield CheckResult(f"{label}: resolves {name}", ok,
                      detail if ok else f"cannot resolve {name}: look at its "
                      "/etc/resolv.conf and host.dns")


def forward_checks(desired: Desired) -> Iterator[CheckResult]:
    public = str(desired.host.ipv4.address.ip)
    for fwd in desired.host.forwards:
        label = f"forward {fwd.protocol}/{fwd.port} -> {fwd.container}:{fwd.target_port}"
        if fwd.protocol != "tcp":
            yield CheckResult(label, True, "udp: not checkable without the service's "
                              "protocol; the DNAT rule is in the ruleset")
            continue
        try:
            with socket.create_connection((public, fwd.port), timeout=3):
                pass
            yield CheckResult(label, True, f"a TCP connection to {public}:{fwd.port} "
                              "reached the container")
        except OSError as exc:
            yield CheckResult(label, False, f"{public}:{fwd.port}: {exc.strerror or exc}; "
                              f"is the service listening on port {fwd.target_port} in "
                              f"{fwd.container}?")
