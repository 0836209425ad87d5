"""/etc/network/interfaces for ifupdown, with Debian's openvswitch-switch stanzas
(ovs_type, ovs_ports, ovs_bridge) or bridge-utils stanzas, so that the network comes
back at boot exactly as fjord left it; and ifupdown's record of what is up
(/run/network/ifstate*), kept true when fjord brings interfaces up itself.

What a systemd boot does with the file (Debian 12 and 13): networking.service runs
`ifup -a`, which raises only `auto` stanzas (openvswitch-switch.service runs /bin/true;
the old `ifup --allow=ovs` no longer runs). At shutdown it runs `ifdown -a`, whose
openvswitch hook deletes every bridge and port ifupdown recorded up (`del-br`,
`del-port`); the next boot's `add-br` re-creates them from the stanzas alone. So the
bridges are `auto` (and `allow-ovs`, for the old way), and each bridge stanza carries
in ovs_extra everything fjord sets on it in OVSDB (ovs.Ovs.ensure_bridge): the datapath
type and, for the external bridge, the uplink's MAC (else a random one at every boot).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fjord.config.desired import Desired
from fjord.net import uplink_filter
from fjord.state import atomic_write

HEADER = """\
# Managed by fjord (`fjord apply`): edit the fjord configuration, not this file.
# The previous version is kept under /var/lib/fjord/backups.
"""

# ifupdown's state directory: `ifstate` lists what is up as IFACE=LOGICAL lines, in the
# order interfaces came up (`ifdown -a` takes them down in reverse); `ifstate.IFACE`,
# also the interface's lock file, holds LOGICAL (up) or an empty line (down).
IFSTATE_DIR = Path("/run/network")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SOURCE = re.compile(r"^\s*(source|source-directory|source-dir)\s+\S")


def internal_mac(uplink_mac: str) -> str:
    """The internal Linux bridge's fixed MAC: the uplink's with the locally administered
    bit flipped (stable, and unique among this host's links). A Linux bridge without a
    MAC of its own takes its lowest port's, so starting a container could change the
    containers' gateway's MAC; IPv4 neighbours hear of it (gratuitous ARP), IPv6 ones do
    not, and the other containers lost IPv6 until their neighbour entries expired."""
    first, rest = uplink_mac.lower().split(":", 1)
    return f"{int(first, 16) ^ 0x02:02x}:{rest}"


def _stanza(head: str, options: list[tuple[str, str]]) -> list[str]:
    return [head, *(f"    {key} {value}" for key, value in options), ""]


def sources(current: str | None) -> list[str]:
    """The `source`/`source-directory` lines of the current file (the provider's
    `source /etc/network/interfaces.d/*`), to keep them in the rewritten one."""
    return [line.strip() for line in (current or "").splitlines() if _SOURCE.match(line)]


def sourced_files(keep: Sequence[str], base: Path) -> list[Path]:
    """The files those lines include, as ifupdown finds them: `source` globs relative to
    ``base`` (the including file's directory); `source-directory` run-parts names."""
    out: list[Path] = []
    for line in keep:
        word, _, arg = line.partition(" ")
        for pattern in arg.split():
            path = Path(pattern) if pattern.startswith("/") else base / pattern
            if word == "source":
                out += sorted(p for p in path.parent.glob(path.name) if p.is_file())
            elif path.is_dir():
                out += sorted(p for p in path.iterdir()
                              if p.is_file() and re.fullmatch(r"[A-Za-z0-9_-]+", p.name))
    return out


def declares(text: str, names: Sequence[str]) -> set[str]:
    """Which of ``names`` a file has `iface`, `auto` or `allow-*` lines for."""
    found = set()
    for line in text.splitlines():
        words = line.split()
        if words and (words[0] in ("iface", "auto") or words[0].startswith("allow-")):
            found |= set(words[1:2] if words[0] == "iface" else words[1:]) & set(names)
    return found


def render(desired: Desired, *, mac: str | None = None, keep: Sequence[str] = ()) -> str:
    """The file. ``mac``: the uplink's MAC (read at plan time), which the external
    bridge keeps; None leaves it out. ``keep``: source lines of the current file."""
    host = desired.host
    sw = host.switch
    ext, internal, uplink = sw.external, sw.internal, host.uplink
    ovs = sw.kind == "ovs"
    if mac is not None and not _MAC.match(mac.lower()):
        raise ValueError(f"{mac!r} is not a MAC address")  # it ends up in a shell eval
    mac = mac.lower() if mac else None
    lines = [HEADER, "auto lo", "iface lo inet loopback", ""]

    def bridge_extra(name: str) -> list[tuple[str, str]]:
        # exactly what ensure_bridge sets in OVSDB, so that the add-br of each boot
        # (after the del-br of each shutdown) makes the same bridge
        extra = [("ovs_type", "OVSBridge")]
        sets = [f"set bridge ${{IFACE}} datapath_type={sw.datapath}"]
        if name == ext:
            extra.append(("ovs_ports", uplink))
            if mac:
                sets.append(f"set bridge ${{IFACE}} other_config:hwaddr={mac}")
        extra.append(("ovs_extra", " -- ".join(sets)))
        return extra

    # external bridge with the public addresses; `auto` for networking.service's
    # `ifup -a`, `allow-ovs` for openvswitch-switch's old `ifup --allow=ovs`
    v4 = host.ipv4
    ext_v4 = [("address", str(v4.address)), ("gateway", str(v4.gateway))]
    if v4.onlink_gateway:
        # ifupdown adds the default route `onlink`; the host route to the gateway, as the
        # switchover makes it, comes after (Hetzner Cloud: a /32, gateway 172.31.1.1)
        ext_v4.append(("up", f"ip route replace {v4.gateway}/32 dev {ext} scope link"))
    if ovs:
        lines += [f"auto {ext}", f"allow-ovs {ext}"]
        lines += _stanza(f"iface {ext} inet static", ext_v4 + bridge_extra(ext))
    else:
        # bridge_hw: a MAC works with every bridge-utils; a device name only with 1.7+
        lines += [f"auto {ext}"]
        lines += _stanza(f"iface {ext} inet static", ext_v4 + [
            ("bridge_ports", uplink), ("bridge_stp", "off"), ("bridge_fd", "0"),
            ("bridge_hw", mac or uplink)])
    if host.ipv6 is not None:
        lines += _stanza(f"iface {ext} inet6 static", [
            ("address", str(host.ipv6.address)), ("gateway", str(host.ipv6.gateway)),
            ("dad-attempts", "0"), ("accept_ra", "0")])

    # the uplink, a port of the external bridge, without addresses; raised by the
    # bridge's hook (`ifup --allow=br-ex`), not `auto`: it needs the bridge first
    if ovs:
        opts = [("ovs_bridge", ext), ("ovs_type", "OVSPort")]
        if sw.datapath == "netdev":
            opts.append(("pre-up", f"nft -f {uplink_filter.PERSISTED}"))
        lines += [f"allow-{ext} {uplink}"]
        lines += _stanza(f"iface {uplink} inet manual", opts)
    else:
        lines += _stanza(f"iface {uplink} inet manual", [])

    # internal bridge: the containers' gateway
    int_v4 = [("address", str(host.private.address))]
    if ovs:
        lines += [f"auto {internal}", f"allow-ovs {internal}"]
        lines += _stanza(f"iface {internal} inet static", int_v4 + bridge_extra(internal))
    else:
        lines += [f"auto {internal}"]
        lines += _stanza(f"iface {internal} inet static", int_v4 + [
            ("bridge_ports", "none"), ("bridge_stp", "off"), ("bridge_fd", "0")]
            + ([("bridge_hw", internal_mac(mac))] if mac else []))
    if host.ipv6 is not None and host.ipv6.effective_mode == "routed":
        # the containers' IPv6 gateway, and a route to each container's public address
        opts = [("address", f"{ROUTED_GATEWAY6}/64"), ("dad-attempts", "0")]
        opts += [("up", f"ip -6 route replace {c.ipv6}/128 dev {internal}")
                 for c in desired.containers if c.ipv6]
        if host.ipv6.proxy_ndp:
            opts += [("up", f"ip -6 neigh replace proxy {c.ipv6} dev {ext}")
                     for c in desired.containers if c.ipv6]
        lines += _stanza(f"iface {internal} inet6 static", opts)

    # The provider's source lines come last: `ifup -a` raises interfaces in file
    # order, so the bridges (the way in) come up before anything the provider's
    # directory adds, and a stanza there cannot stop them coming up first.
    if keep:
        lines += ["# kept from the provider's file", *keep, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def raised_at_boot(desired: Desired) -> list[str]:
    """The interfaces `ifup -a` records up with the rendered file, in its order (lo
    aside): each bridge as ifup starts it, and with Open vSwitch the uplink in between,
    brought up by the external bridge's hook (`ifup --allow=br-ex eth0`)."""
    sw = desired.host.switch
    if sw.kind == "ovs":
        return [sw.external, desired.host.uplink, sw.internal]
    return [sw.external, sw.internal]


# --- ifupdown's state ---------------------------------------------------------------------


def read_ifstate(names: Sequence[str], state_dir: Path | None = None) -> dict[str, str | None]:
    """The state files that record_up would change: file name -> content (None: absent)."""
    state_dir = state_dir or IFSTATE_DIR
    out: dict[str, str | None] = {}
    for name in ("ifstate", *(f"ifstate.{n}" for n in names)):
        try:
            out[name] = (state_dir / name).read_text()
        except FileNotFoundError:
            out[name] = None
    return out


def record_up(up: Sequence[str], down: Sequence[str] = (),
              state_dir: Path | None = None) -> None:
    """Record ``up`` as ifupdown would after raising them (each under its own logical
    name) and ``down`` as taken down, keeping every other interface's record. The new
    order is ifupdown's at boot: lo, then ``up``, then the others."""
    state_dir = state_dir or IFSTATE_DIR
    gone = {*up, *down}
    with _locked(state_dir):
        old = _read(state_dir / "ifstate").splitlines()
        rest = [line for line in old if line.partition("=")[0] not in gone]
        lo = [line for line in rest if line.partition("=")[0] == "lo"]
        lines = lo + [f"{n}={n}" for n in up] + [x for x in rest if x not in lo]
        atomic_write(state_dir / "ifstate", "".join(f"{x}\n" for x in lines).encode())
    for name in up:
        _write_iface(state_dir, name, name)
    for name in down:
        if (state_dir / f"ifstate.{name}").exists():
            _write_iface(state_dir, name, "")


def restore_ifstate(saved: dict[str, str | None], state_dir: Path | None = None) -> None:
    """Put back what read_ifstate saved."""
    state_dir = state_dir or IFSTATE_DIR
    with _locked(state_dir):
        for name, content in saved.items():
            path = state_dir / name
            if content is None:
                path.unlink(missing_ok=True)
            elif name == "ifstate":
                atomic_write(path, content.encode())
            else:
                _write_iface(state_dir, name.removeprefix("ifstate."), content, raw=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """ifupdown's lock on its list of what is up (an fcntl lock on .ifstate.lock)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / ".ifstate.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_iface(state_dir: Path, name: str, content: str, *, raw: bool = False) -> None:
    """ifstate.NAME in place, under its lock, as ifupdown rewrites it."""
    fd = os.open(state_dir / f"ifstate.{name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, (content if raw else f"{content}\n").encode())
    finally:
        os.close(fd)


# In routed mode, containers reach the world over IPv6 through the host's br-int,
# where the host answers as fe80::1, the same gateway address as in bridged mode.
ROUTED_GATEWAY6 = "fe80::1"
