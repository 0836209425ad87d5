"""The simulated server as its provider hands it over: files and the NIC's first setup."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv6Address, IPv6Interface

from fjord.lab import files, mounts, netlink
from fjord.lab.daemons import OVS_SCHEMA
from fjord.lab.names import Names
from fjord.lab.spec import LabSpec
from fjord.runner import run

# Overlay's marker that an upper directory hides the lower one's entries.
_OPAQUE = ("trusted.overlay.opaque", b"y")
# Directories the server starts with empty whatever the machine has in them: the
# provider's installer's network is the lab's own, and the machine's other network
# managers (cloud-init, netplan, systemd-networkd's files: a cloud image running CI
# has them) are not the simulated server's (fjord.net.netmanagers would refuse them).
OPAQUE_DIRS = ("network/interfaces.d", "cloud", "netplan", "systemd/network")


def create_files(names: Names, spec: LabSpec) -> None:
    """The lab directory and the server's files (/etc/network/interfaces, hosts,
    hostname, resolv.conf, an empty Open vSwitch database)."""
    layout = mounts.LabLayout(names.dir)
    mounts.create_tree(layout)
    for rel, content in files.server_files(spec).items():
        path = layout.etc_upper / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for rel in OPAQUE_DIRS:
        path = layout.etc_upper / rel
        path.mkdir(parents=True, exist_ok=True)
        os.setxattr(path, *_OPAQUE)
    # A fresh, empty Open vSwitch database, as the package's postinst leaves it (the
    # machine's own /etc/openvswitch/conf.db stays below, unused).
    db = layout.etc_upper / "openvswitch" / "conf.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)], timeout=30)


def configure_nic(names: Names, spec: LabSpec) -> None:
    """Addresses and default routes as the installer's /etc/network/interfaces gives
    them, set directly (the first boot is simulated, not replayed: faster).

    The NIC's EUI-64 link-local address is added without duplicate address detection
    before the link comes up, so that the router can reach it at once (the provider
    routes the /64 to it in the routed profile)."""
    with netlink.rtnl(names.netns_server) as ipr:
        netlink.up(ipr, "lo")
        nic = netlink.index(ipr, spec.uplink)
        if spec.ipv6_interface is not None:
            netlink.add_address(ipr, nic, IPv6Interface(f"{spec.link_local}/64"))
        netlink.up(ipr, spec.uplink)
        if spec.onlink_gateway4:
            # ifupdown's `pointopoint GW` and its `onlink` default route
            gw = IPv4Address(spec.gateway4)
            netlink.add_address(ipr, nic, spec.ipv4_interface, peer=gw)
            netlink.add_default_route(ipr, nic, gw, onlink=True)
        else:
            netlink.add_address(ipr, nic, spec.ipv4_interface)
            netlink.add_default_route(ipr, nic, IPv4Address(spec.gateway4))
        six = spec.ipv6_interface
        if six is not None and spec.gateway6:
            netlink.add_address(ipr, nic, six)
            netlink.add_default_route(ipr, nic, IPv6Address(spec.gateway6))
