"""Anti-spoofing on the internal bridge: OpenFlow flows that let each container port send
only from its own MAC and addresses.

Open vSwitch alone (one flow, ``NORMAL``) lets a container answer ARP and neighbour
solicitations for a neighbour's address, or send with any source: the host and the
world then talk to the wrong container. fjord owns the internal bridge's flow table:

- per container port (found by the ``attached-mac`` libvirt writes on its Interface):
  ARP only with its MAC and IPv4 (``arp_sha``/``arp_spa``; probes from 0.0.0.0), IPv4
  only from its address, IPv6 only from its link-local (EUI-64 of its MAC) and, routed,
  its public address; neighbour advertisements only for those targets with its MAC
  (or none) as target link-layer address; solicitations only with its MAC (or none) as
  source link-layer address, or from ``::`` for duplicate address detection; no router
  advertisements or redirects; everything else from the port is dropped;
- every other port (the host's own, anything else) keeps ``NORMAL``.

The table is a function of the declared containers (a state file, written before any
container starts) and of the ports that exist now. libvirt gives a container's port a
new name and OpenFlow number at every start (vnet0 -> vnet4), so the table is rebuilt
from that file by libvirt's hook at every start (``start begin``: the new port is on the
bridge, the container's init has not started) and stop (boot included), and by
`fjord apply`, which shows the difference in the plan. Each rebuild is one atomic
``ovs-ofctl --bundle replace-flows``.

Flows are built from typed values (MAC checked, ``ipaddress`` objects, integers), never
pasted from free text. The hook imports only this module and the standard library.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from fjord import runner
from fjord.net.words import IFNAME, mac

STATE_FILE = "port-guard.json"
LOCK_FILE = "port-guard.lock"
COOKIE = 0xF10D  # every flow fjord installs
ZERO_MAC = "00:00:00:00:00:00"
UNSPECIFIED = IPv6Address("::")
TIMEOUT = 20.0

# priorities
NDP = 320          # allowed neighbour discovery
NDP_DENY = 310     # any other neighbour discovery / router advertisement / redirect
ALLOWED = 300      # own ARP, IPv4, IPv6 sources
PORT_DENY = 200    # the rest of the port
DEFAULT = 0        # NORMAL for every other port



class GuardError(Exception):
    """ovs-ofctl or ovs-vsctl failed, or the state file is unreadable."""


def bridge_name(value: str) -> str:
    if not IFNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a bridge name")
    return value


def link_local(mac_: str) -> IPv6Address:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    octets = [int(b, 16) for b in mac(mac_).split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui))


# --- what a port may send --------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """A container's port on the internal bridge, as declared."""

    container: str
    mac: str
    ipv4: IPv4Address
    ipv6: tuple[IPv6Address, ...]  # link-local first

    def as_json(self) -> dict[str, Any]:
        return {"container": self.container, "mac": self.mac, "ipv4": str(self.ipv4),
                "ipv6": [str(a) for a in self.ipv6]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Port:
        v4 = ip_address(str(data["ipv4"]))
        v6 = tuple(ip_address(str(a)) for a in data.get("ipv6", []))
        if not isinstance(v4, IPv4Address) or not all(isinstance(a, IPv6Address) for a in v6):
            raise ValueError("wrong address family")
        return cls(str(data["container"]), mac(str(data["mac"])), v4,
                   tuple(a for a in v6 if isinstance(a, IPv6Address)))


@dataclass(frozen=True)
class Flow:
    """One OpenFlow rule; values are typed and rendered by :meth:`text`."""

    priority: int
    match: tuple[tuple[str, object], ...]
    action: str  # NORMAL or drop

    def text(self) -> str:
        # the NORMAL flow is the one a bridge starts with (cookie 0): a table with no
        # container running is the bridge's own, after a reboot too
        cookie = COOKIE if self.match else 0
        parts = [f"cookie={cookie:#x}", f"priority={_int(self.priority, 0xFFFF)}"]
        for key, value in self.match:
            parts.append(_field(key, value))
        if self.action not in ("NORMAL", "drop"):
            raise ValueError(f"bad action {self.action!r}")
        return ",".join(parts) + f" actions={self.action}"


_PROTOCOLS = ("arp", "ip", "ipv6", "icmp6")
_FIELDS: dict[str, type] = {
    "in_port": int, "dl_src": str, "arp_spa": IPv4Address, "arp_sha": str, "arp_op": int,
    "nw_src": IPv4Address, "ipv6_src": IPv6Address, "icmp_type": int,
    "nd_target": IPv6Address, "nd_tll": str, "nd_sll": str,
}


def _int(value: object, top: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{value!r} is not an integer in 0..{top}")
    return str(value)


def _field(key: str, value: object) -> str:
    if key in _PROTOCOLS:
        if value is not True:
            raise ValueError(f"{key} takes no value")
        return key
    kind = _FIELDS.get(key)
    if kind is None:
        raise ValueError(f"unknown flow field {key!r}")
    if kind is int:
        return f"{key}={_int(value, 0xFFFFFFFF)}"
    if kind is str:
        return f"{key}={mac(str(value))}"
    if not isinstance(value, kind):
        raise TypeError(f"{key}: {value!r} is not an {kind.__name__}")
    return f"{key}={value}"


def port_flows(port: Port, ofport: int) -> list[Flow]:
    """What ``port`` (OpenFlow number ``ofport``) may send; the rest of it is dropped."""
    me: tuple[tuple[str, object], ...] = (("in_port", ofport), ("dl_src", port.mac))
    out = [
        Flow(ALLOWED, (("arp", True), *me, ("arp_spa", port.ipv4), ("arp_sha", port.mac)),
             "NORMAL"),
        # ARP probes (address conflict detection) come from 0.0.0.0
        Flow(ALLOWED, (("arp", True), *me, ("arp_op", 1), ("arp_spa", IPv4Address(0)),
                       ("arp_sha", port.mac)), "NORMAL"),
        Flow(ALLOWED, (("ip", True), *me, ("nw_src", port.ipv4)), "NORMAL"),
    ]
    icmp6 = (("icmp6", True), ("in_port", ofport))
    for src in port.ipv6:
        out.append(Flow(ALLOWED, (("ipv6", True), *me, ("ipv6_src", src)), "NORMAL"))
        for lladdr in (port.mac, ZERO_MAC):
            out.append(Flow(NDP, (("icmp6", True), *me, ("ipv6_src", src), ("icmp_type", 135),
                                  ("nd_sll", lladdr)), "NORMAL"))
            for target in port.ipv6:
                out.append(Flow(NDP, (("icmp6", True), *me, ("ipv6_src", src),
                                      ("icmp_type", 136), ("nd_target", target),
                                      ("nd_tll", lladdr)), "NORMAL"))
    # duplicate address detection: a solicitation from :: without a link-layer address;
    # the MLD reports that announce the solicited-node group may come from :: as well
    out.append(Flow(NDP, (("icmp6", True), *me, ("ipv6_src", UNSPECIFIED), ("icmp_type", 135),
                          ("nd_sll", ZERO_MAC)), "NORMAL"))
    for mld in (131, 143):
        out.append(Flow(ALLOWED, (("icmp6", True), *me, ("ipv6_src", UNSPECIFIED),
                                  ("icmp_type", mld)), "NORMAL"))
    for kind in (134, 135, 136, 137):  # RA, NS, NA, redirect: only the above
        out.append(Flow(NDP_DENY, (*icmp6, ("icmp_type", kind)), "drop"))
    out.append(Flow(PORT_DENY, (("in_port", ofport),), "drop"))
    return out


def table(ports: Sequence[Port], ofports: dict[str, int]) -> list[Flow]:
    """The bridge's whole table: each declared port that exists now (by MAC), then NORMAL."""
    out: list[Flow] = []
    for port in ports:
        number = ofports.get(port.mac)
        if number is not None:
            out += port_flows(port, number)
    out.append(Flow(DEFAULT, (), "NORMAL"))
    return out


def render(flows: Sequence[Flow]) -> str:
    return "".join(f.text() + "\n" for f in flows)


# --- the switch ------------------------------------------------------------------------------


def _run(argv: list[str], input: str | None = None) -> runner.Result:
    return runner.run(argv, check=False, input=input, timeout=TIMEOUT)


def ofports(bridge: str) -> dict[str, int]:
    """MAC -> OpenFlow port number of the bridge's ports that libvirt attached."""
    bridge = bridge_name(bridge)
    # One ovs-vsctl, two commands (one OVSDB transaction): the bridge's interface names,
    # one a line, then every Interface as one line of JSON (--format only shapes tables;
    # an interface name never starts with "{").
    found = _run(["ovs-vsctl", "--timeout=10", "--format=json", "--", "list-ifaces", bridge,
                  "--", "--columns=name,ofport,external_ids", "list", "Interface"])
    if found.returncode != 0:
        raise GuardError(f"ovs-vsctl list-ifaces {bridge}, list Interface: "
                         f"{found.stderr.strip()}")
    lines = found.stdout.splitlines()
    table = next((i for i, line in enumerate(lines) if line.startswith("{")), None)
    if table is None:
        raise GuardError(f"ovs-vsctl list Interface printed no table: {found.stdout!r:.200}")
    wanted = {line.strip() for line in lines[:table]}
    try:
        rows = json.loads("\n".join(lines[table:])).get("data", [])
    except (ValueError, AttributeError) as exc:
        raise GuardError(f"ovs-vsctl list Interface printed JSON fjord cannot read: "
                         f"{exc}") from exc
    out: dict[str, int] = {}
    for name, number, ids in rows:
        if name not in wanted or not isinstance(number, int) or number <= 0:
            continue
        attached = dict(ids[1]).get("attached-mac") if isinstance(ids, list) else None
        if attached:
            try:
                out[mac(str(attached))] = number
            except ValueError:
                continue
    return out


def differences(bridge: str, flows: Sequence[Flow]) -> list[str]:
    """``-``/``+`` lines between the bridge's table and ``flows`` (empty: the same)."""
    result = _run(["ovs-ofctl", "diff-flows", bridge_name(bridge), "/dev/stdin"],
                  input=render(flows))
    if result.returncode not in (0, 2):
        raise GuardError(f"ovs-ofctl diff-flows {bridge}: {result.stderr.strip()}")
    return [line for line in result.stdout.splitlines() if line[:1] in "+-" and line[1:]]


def replace(bridge: str, flows: Sequence[Flow]) -> None:
    """Make ``flows`` the bridge's table, in one OpenFlow bundle (all or nothing)."""
    result = _run(["ovs-ofctl", "--bundle", "replace-flows", bridge_name(bridge), "-"],
                  input=render(flows))
    if result.returncode != 0:
        raise GuardError(f"ovs-ofctl replace-flows {bridge}: {result.stderr.strip()}")


# --- the state file the hook reads ---------------------------------------------------------


def state_path(state: Path) -> Path:
    return state / STATE_FILE


def render_state(bridge: str, ports: Sequence[Port]) -> str:
    return json.dumps({"version": 1, "bridge": bridge_name(bridge),
                       "ports": [p.as_json() for p in ports]}, indent=2) + "\n"


def read_state(state: Path) -> tuple[str, list[Port]] | None:
    path = state_path(state)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GuardError(f"cannot read {path}: {exc}") from exc
    try:
        return bridge_name(str(data["bridge"])), [Port.from_json(p) for p in data["ports"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise GuardError(f"{path} is not fjord's port guard: {exc}") from exc


@contextmanager
def locked(state: Path) -> Iterator[None]:
    """One rebuild at a time (containers start together; apply runs beside hooks)."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rebuild(state: Path) -> bool:
    """From the hook: rebuild the table from the state file and the ports now (False:
    no state file, nothing to guard)."""
    with locked(state):
        declared = read_state(state)
        if declared is None:
            return False
        bridge, ports = declared
        replace(bridge, table(ports, ofports(bridge)))
    return True
