"""Other network managers that would configure the uplink behind fjord's back.

fjord's network comes back at boot from /etc/network/interfaces (ifupdown). A second
manager of the uplink undoes it, at the next boot or earlier: cloud-init rewrites the
network from the provider's metadata (a known way to lose a Hetzner server), netplan
generates systemd-networkd or NetworkManager configuration at every boot,
systemd-networkd and NetworkManager configure the links they match themselves, and a
DHCP client left running from the provider's `inet dhcp` stanza re-adds its lease to
the uplink at the next renewal.

Detection reads files and unit links only, from the host's root (``root``, "/" on a
server, a directory in tests): nothing runs and nothing changes. `fjord plan` (the
network layer) refuses while one is found, before anything changes, and says what to
disable. fjord does not disable them itself: switching off cloud-init's networking or
another manager is the operator's decision about the server (a provider's console
then no longer reconfigures it), and one file written would not stop a manager whose
configuration is already generated (/etc/network/interfaces.d/50-cloud-init, a
netplan file, a .network file).
"""

from __future__ import annotations

import configparser
import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fjord.engine.change import Change
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError
from fjord.net import links

ROOT = Path("/")

CLOUD_DISABLE = "etc/cloud/cloud.cfg.d/99-disable-network-config.cfg"
NETPLAN_DIRS = ("lib/netplan", "etc/netplan", "run/netplan")
NETPLAN_GENERATORS = ("usr/lib/systemd/system-generators/netplan",
                      "lib/systemd/system-generators/netplan", "usr/sbin/netplan")
NETPLAN_SECTIONS = ("ethernets", "bonds", "bridges", "vlans", "wifis", "tunnels",
                    "vrfs", "dummy-devices", "virtual-ethernets")
# systemd's search path for .network files, highest priority first
NETWORKD_DIRS = ("etc/systemd/network", "run/systemd/network", "usr/local/lib/systemd/network",
                 "usr/lib/systemd/network", "lib/systemd/network")
NM_CONF_DIRS = ("usr/lib/NetworkManager/conf.d", "etc/NetworkManager/conf.d",
                "run/NetworkManager/conf.d")
NM_CONNECTIONS = ("etc/NetworkManager/system-connections",
                  "run/NetworkManager/system-connections",
                  "usr/lib/NetworkManager/system-connections")


@dataclass(frozen=True)
class Finding:
    manager: str
    evidence: str  # the file(s) that show it
    todo: str      # what the operator does about it


def detect(root: Path, uplink: str, mac: str | None = None,
           names: Sequence[str] = ()) -> list[Finding]:
    """Every other manager that configures ``uplink`` (or one of ``names``, the
    bridges) on the host whose root is ``root``."""
    wanted = [uplink, *names]
    out: list[Finding] = []
    out += _cloud_init(root)
    out += _netplan(root, wanted, mac)
    out += _networkd(root, wanted, mac)
    out += _network_manager(root, uplink, wanted, mac)
    out += _dhcp_client(root, uplink)
    return out


# --- a DHCP client still running for the uplink ------------------------------------------


# PID files of the DHCP clients ifupdown starts (`inet dhcp`: dhclient, else dhcpcd)
DHCP_PIDFILES = ("run/dhclient.{}.pid", "run/dhcpcd/{}.pid", "run/dhcpcd-{}.pid")


def _dhcp_client(root: Path, uplink: str) -> Iterator[Finding]:
    """A DHCP client of the provider's `inet dhcp` stanza (Hetzner Cloud's images) keeps
    running after the file changes: at its next renewal it puts the lease back on the
    uplink, by then a port of the bridge."""
    for pattern in DHCP_PIDFILES:
        path = root / pattern.format(uplink)
        try:
            pid = int(path.read_text().split()[0])
            comm = (root / f"proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        if comm not in ("dhclient", "dhcpcd"):
            continue  # a stale PID file
        yield Finding(f"a DHCP client ({comm}, PID {pid})", f"/{pattern.format(uplink)}",
                      f"give {uplink} a static stanza with the leased address and gateway "
                      f"(at Hetzner Cloud: `address A/32`, `gateway 172.31.1.1`, "
                      f"`pointopoint 172.31.1.1`) and stop the client (`kill {pid}`; "
                      f"the address stays)")


# --- cloud-init -------------------------------------------------------------------------


def _cloud_init(root: Path) -> Iterator[Finding]:
    cfg = root / "etc/cloud/cloud.cfg"
    if not cfg.is_file() or (root / "etc/cloud/cloud-init.disabled").exists():
        return
    # cloud.cfg, then cloud.cfg.d/*.cfg in name order: the last `network` key wins
    config: Any = None
    for path in [cfg, *sorted((root / "etc/cloud/cloud.cfg.d").glob("*.cfg"))]:
        network = _yaml(path).get("network")
        if isinstance(network, dict) and "config" in network:
            config = network["config"]
    if config == "disabled":
        return
    generated = sorted(str(p.relative_to(root)) for p in
                       (root / "etc/network/interfaces.d").glob("50-cloud-init*"))
    evidence = "/etc/cloud/cloud.cfg" + (f" (it wrote /{', /'.join(generated)})"
                                          if generated else "")
    todo = (f"turn off cloud-init's network configuration: write `network: {{config: "
            f"disabled}}` to /{CLOUD_DISABLE}")
    if generated:
        todo += f", and delete /{', /'.join(generated)} (fjord's stanzas replace it)"
    yield Finding("cloud-init (network configuration enabled: it rewrites the network at "
                  "boot)", evidence, todo)


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# --- netplan ----------------------------------------------------------------------------


def _netplan(root: Path, names: Sequence[str], mac: str | None) -> Iterator[Finding]:
    if not any((root / g).exists() for g in NETPLAN_GENERATORS):
        return  # files without netplan are read by nothing
    # netplan merges /lib, /etc, /run; a same-named file in a later directory shadows
    files: dict[str, Path] = {}
    for d in NETPLAN_DIRS:
        for path in sorted((root / d).glob("*.yaml")):
            files[path.name] = path
    matched = []
    for path in files.values():
        network = _yaml(path).get("network")
        if isinstance(network, dict) and _netplan_matches(network, names, mac):
            matched.append("/" + str(path.relative_to(root)))
    if matched:
        yield Finding("netplan", ", ".join(sorted(matched)),
                      f"remove the uplink from {', '.join(sorted(matched))} (or remove "
                      f"netplan: `apt purge netplan.io`)")


def _netplan_matches(network: dict[str, Any], names: Sequence[str], mac: str | None) -> bool:
    for section in NETPLAN_SECTIONS:
        entries = network.get(section)
        if not isinstance(entries, dict):
            continue
        for key, entry in entries.items():
            entry = entry if isinstance(entry, dict) else {}
            match = entry.get("match")
            if isinstance(match, dict):
                if _globs_match(str(match.get("name", "")).split(), names):
                    return True
                if mac and str(match.get("macaddress", "")).lower() == mac.lower():
                    return True
                if entry.get("set-name") in names:
                    return True
            elif str(key) in names:
                return True
    return False


# --- systemd-networkd -------------------------------------------------------------------


def _enabled(root: Path, unit: str) -> bool:
    """Whether ``unit`` is enabled as `systemctl enable` leaves it (a link in a .wants or
    .requires directory of /etc/systemd/system) and not masked."""
    system = root / "etc/systemd/system"
    masked = system / unit
    if masked.is_symlink() and str(masked.readlink()) == "/dev/null":
        return False
    try:
        dirs = [d for d in system.iterdir() if d.name.endswith((".wants", ".requires"))]
    except OSError:
        return False
    # the links point into /lib/systemd/system, absent from a test's root: lexists
    return any(os.path.lexists(d / unit) for d in dirs)


def _networkd(root: Path, names: Sequence[str], mac: str | None) -> Iterator[Finding]:
    if not (_enabled(root, "systemd-networkd.service")
            or _enabled(root, "systemd-networkd.socket")):
        return
    files: dict[str, Path] = {}
    for d in reversed(NETWORKD_DIRS):  # a same-named file higher up shadows (or masks)
        for path in sorted((root / d).glob("*.network")):
            files[path.name] = path
    matched = []
    for path in files.values():
        if path.is_symlink() and str(path.readlink()) == "/dev/null":
            continue
        if _network_file_matches(path, names, mac):
            matched.append("/" + str(path.relative_to(root)))
    if matched:
        yield Finding("systemd-networkd", ", ".join(sorted(matched)),
                      f"remove {', '.join(sorted(matched))} (or `systemctl disable --now "
                      f"systemd-networkd.service systemd-networkd.socket`)")


def _network_file_matches(path: Path, names: Sequence[str], mac: str | None) -> bool:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(path.read_text(errors="replace"))
    except (OSError, configparser.Error):
        return False
    if not parser.has_section("Match"):
        return True  # no [Match]: every link
    match = parser["Match"]
    if "Name" in match:
        return _globs_match(match["Name"].split(), names)
    for key in ("MACAddress", "PermanentMACAddress"):
        if key in match:
            return mac is not None and mac.lower() in match[key].lower().split()
    # only Type=, Driver=, Virtualization=…: an Ethernet NIC may well match
    return match.get("Type", "ether") == "ether" and "Virtualization" not in match


def _globs_match(globs: Sequence[str], names: Sequence[str]) -> bool:
    """systemd's and netplan's name lists: globs, a leading ! inverts the whole list."""
    if not globs:
        return False
    invert = globs[0].startswith("!")
    pats = [g.removeprefix("!") for g in globs]
    hit = any(fnmatch.fnmatchcase(n, p) for n in names for p in pats)
    return hit != invert


# --- NetworkManager ---------------------------------------------------------------------


def _network_manager(root: Path, uplink: str, names: Sequence[str],
                     mac: str | None) -> Iterator[Finding]:
    if not _enabled(root, "NetworkManager.service"):
        return
    connections = []
    for d in NM_CONNECTIONS:
        for path in sorted((root / d).glob("*")):
            if path.is_file() and _nm_connection_matches(path, names, mac):
                connections.append("/" + str(path.relative_to(root)))
    if connections:
        yield Finding("NetworkManager", ", ".join(connections),
                      f"delete {', '.join(connections)} and declare the uplink unmanaged "
                      f"(`[keyfile] unmanaged-devices=interface-name:{uplink}` in "
                      f"/etc/NetworkManager/conf.d/), or `systemctl disable --now "
                      f"NetworkManager`")
        return
    conf = _nm_config(root)
    unmanaged = conf.get(("keyfile", "unmanaged-devices"), "")
    for spec in unmanaged.replace(",", ";").split(";"):
        kind, _, value = spec.strip().partition(":")
        if kind == "interface-name" and fnmatch.fnmatchcase(uplink, value.lstrip("=~")):
            return
        if kind == "mac" and mac is not None and value.lower() == mac.lower():
            return
        if kind == "*" or spec.strip() == "*":
            return
    plugins = [p.strip() for p in conf.get(("main", "plugins"), "").split(",")]
    managed = conf.get(("ifupdown", "managed"), "false").strip().lower() in ("true", "1", "yes")
    if "ifupdown" in plugins and not managed:
        return  # interfaces of /etc/network/interfaces stay ifupdown's (Debian's default)
    yield Finding("NetworkManager", "/etc/NetworkManager/NetworkManager.conf "
                  "(it manages every Ethernet device not declared unmanaged)",
                  f"declare the uplink unmanaged (`[keyfile] "
                  f"unmanaged-devices=interface-name:{uplink}` in /etc/NetworkManager/"
                  f"conf.d/99-fjord.conf), or `systemctl disable --now NetworkManager`")


def _nm_config(root: Path) -> dict[tuple[str, str], str]:
    """NetworkManager.conf merged with its conf.d directories (later files win)."""
    out: dict[tuple[str, str], str] = {}
    paths = [root / "etc/NetworkManager/NetworkManager.conf"]
    for d in NM_CONF_DIRS:
        paths += sorted((root / d).glob("*.conf"))
    for path in paths:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(path.read_text(errors="replace"))
        except (OSError, configparser.Error):
            continue
        for section in parser.sections():
            for key, value in parser[section].items():
                out[(section, key)] = value
    return out


def _nm_connection_matches(path: Path, names: Sequence[str], mac: str | None) -> bool:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(path.read_text(errors="replace"))
    except (OSError, configparser.Error):
        return False
    if parser.get("connection", "interface-name", fallback="") in names:
        return True
    for section in ("ethernet", "802-3-ethernet"):
        found = parser.get(section, "mac-address", fallback="")
        if mac and found.lower() == mac.lower():
            return True
    return False


# --- the plan's refusal -------------------------------------------------------------------


class OtherNetworkManagers(Resource):
    """No other network manager may configure the uplink or the bridges: plan refuses
    (before anything changes) while one does, saying what to disable."""

    kind = "network managers"

    def __init__(self, uplink: str, bridges: Sequence[str], root: Path = ROOT) -> None:
        super().__init__(uplink)
        self.uplink = uplink
        self.bridges = tuple(bridges)
        self.root = root

    def changes(self, ctx: Context) -> list[Change]:
        link = links.driver(ctx).link(self.uplink)
        found = detect(self.root, self.uplink, link.mac if link is not None else None,
                       self.bridges)
        if found:
            what = "; ".join(f"{f.manager}: {f.evidence}" for f in found)
            raise FjordError(
                f"another network manager configures {self.uplink}, and would undo "
                f"fjord's network (at the next boot, or sooner): {what}",
                hint="; ".join(f.todo for f in found) + "; then run plan again "
                "(nothing was changed)")
        return []

    def unchanged_reason(self, ctx: Context) -> str:
        return (f"no cloud-init network configuration, netplan, systemd-networkd, "
                f"NetworkManager or DHCP client configures {self.uplink}")
