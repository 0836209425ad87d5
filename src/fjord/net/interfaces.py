"""/etc/network/interfaces for ifupdown, with Debian's openvswitch-switch stanzas
(allow-ovs, ovs_type, ovs_ports, ovs_bridge) or bridge-utils stanzas, so that the
network comes back at boot exactly as fjord left it."""

from __future__ import annotations

from fjord.config.desired import Desired
from fjord.net import uplink_guard

HEADER = """\
# Managed by fjord (`fjord apply`): edit the fjord configuration, not this file.
# The previous version is kept under /var/lib/fjord/backups.
"""


def _stanza(head: str, options: list[tuple[str, str]]) -> list[str]:
    return [head, *(f"    {key} {value}" for key, value in options), ""]


def render(desired: Desired) -> str:
    host = desired.host
    sw = host.switch
    ext, internal, uplink = sw.external, sw.internal, host.uplink
    ovs = sw.kind == "ovs"
    lines = [HEADER, "auto lo", "iface lo inet loopback", ""]

    def bridge_extra(name: str) -> list[tuple[str, str]]:
        extra = [("ovs_type", "OVSBridge")]
        sets = [f"set bridge ${{IFACE}} datapath_type={sw.datapath}"]
        if name == ext:
            extra.append(("ovs_ports", uplink))
        extra.append(("ovs_extra", " -- ".join(sets)))
        return extra

    # external bridge with the public addresses
    v4 = host.ipv4
    ext_v4 = [("address", str(v4.address)), ("gateway", str(v4.gateway))]
    if ovs:
        lines += [f"allow-ovs {ext}"]
        lines += _stanza(f"iface {ext} inet static", ext_v4 + bridge_extra(ext))
    else:
        lines += [f"auto {ext}"]
        lines += _stanza(f"iface {ext} inet static", ext_v4 + [
            ("bridge_ports", uplink), ("bridge_stp", "off"), ("bridge_fd", "0"),
            ("bridge_hw", uplink)])
    if host.ipv6 is not None:
        lines += _stanza(f"iface {ext} inet6 static", [
            ("address", str(host.ipv6.address)), ("gateway", str(host.ipv6.gateway)),
            ("dad-attempts", "0"), ("accept_ra", "0")])

    # the uplink, a port of the external bridge, without addresses
    if ovs:
        opts = [("ovs_bridge", ext), ("ovs_type", "OVSPort")]
        if sw.datapath == "netdev":
            opts.append(("pre-up", f"nft -f {uplink_guard.PERSISTED}"))
        lines += [f"allow-{ext} {uplink}"]
        lines += _stanza(f"iface {uplink} inet manual", opts)
    else:
        lines += _stanza(f"iface {uplink} inet manual", [])

    # internal bridge: the containers' gateway
    int_v4 = [("address", str(host.private.address))]
    if ovs:
        lines += [f"allow-ovs {internal}"]
        lines += _stanza(f"iface {internal} inet static", int_v4 + bridge_extra(internal))
    else:
        lines += [f"auto {internal}"]
        lines += _stanza(f"iface {internal} inet static", int_v4 + [
            ("bridge_ports", "none"), ("bridge_stp", "off"), ("bridge_fd", "0")])
    if host.ipv6 is not None and host.ipv6.effective_mode == "routed":
        # the containers' IPv6 gateway, and a route to each container's public address
        opts = [("address", f"{ROUTED_GATEWAY6}/64"), ("dad-attempts", "0")]
        opts += [("up", f"ip -6 route replace {c.ipv6}/128 dev {internal}")
                 for c in desired.containers if c.ipv6]
        if host.ipv6.proxy_ndp:
            opts += [("up", f"ip -6 neigh replace proxy {c.ipv6} dev {ext}")
                     for c in desired.containers if c.ipv6]
        lines += _stanza(f"iface {internal} inet6 static", opts)
    return "\n".join(lines).rstrip("\n") + "\n"


# In routed mode, containers reach the world over IPv6 through the host's br-int,
# where the host answers as fe80::1, the same gateway address as in bridged mode.
ROUTED_GATEWAY6 = "fe80::1"
