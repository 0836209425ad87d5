"""Network resources of the host: bridges, the uplink switchover, the internal gateway,
container routes and proxy NDP entries, and the files that make them survive a reboot."""

from __future__ import annotations

import socket
from ipaddress import IPv6Address, ip_address, ip_interface
from typing import Any

from fjord.config.desired import Desired
from fjord.containers.kind import ContainerResource
from fjord.engine.change import Change
from fjord.engine.order import Ref
from fjord.engine.resource import Context, Reference, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.host.services import Service
from fjord.net import interfaces, links, nft, portguard, switch, switchover, uplink_filter
from fjord.state import state_dir

INTERFACES = "/etc/network/interfaces"


class Bridge(Resource):
    """A bridge (OVS or Linux) with its datapath, MAC and link up."""

    kind = "bridge"
    after = (Ref(Service, "openvswitch-switch"),)

    def __init__(self, name: str, *, datapath: str, mac_of: str | None = None,
                 role: str = "", derived: bool = False) -> None:
        super().__init__(name)
        self.datapath = datapath
        self.mac_of = mac_of  # take this link's MAC (the uplink's, for the provider)
        self.derived = derived  # ... or one made from it (interfaces.internal_mac)
        self.role = role

    def _wanted_mac(self, ctx: Context, current: Any) -> str | None:
        if self.mac_of is None:
            return None
        uplink = links.driver(ctx).link(self.mac_of)
        if uplink is not None:
            return interfaces.internal_mac(uplink.mac) if self.derived else uplink.mac
        return current.hwaddr if current else None

    def changes(self, ctx: Context) -> list[Change]:
        sw = switch.driver(ctx)
        current = sw.bridges().get(self.name)
        mac = self._wanted_mac(ctx, current)
        link = links.driver(ctx).link(self.name)

        def ensure(c: Context) -> None:
            sw.ensure_bridge(self.name, self.datapath, mac)
            links.driver(c).set_up(self.name)

        if current is None:
            dp = f" ({self.datapath} datapath)" if sw.kind == "ovs" else ""
            extra = (f", MAC {mac} {'from' if self.derived else 'of'} {self.mac_of}"
                     if mac else "")
            return [Change(self.id, "create", f"{sw.kind} bridge {self.name}{dp}{extra}"
                           f"{': ' + self.role if self.role else ''}", ensure)]
        diffs = []
        if sw.kind == "ovs" and current.datapath_type != self.datapath:
            diffs.append(f"datapath {current.datapath_type} -> {self.datapath}")
        if mac and (current.hwaddr or "").lower() != mac.lower():
            diffs.append(f"MAC {current.hwaddr or 'unset'} -> {mac}")
        if link is None or not link.up:
            diffs.append("link up")
        if not diffs:
            return []
        return [Change(self.id, "update", f"{self.name}: {', '.join(diffs)}", ensure)]

    def unchanged_reason(self, ctx: Context) -> str:
        return f"{self.name} exists, up, {self.datapath} datapath"


class Uplink(Resource):
    """The uplink as a port of the external bridge, which holds the public addresses and
    the default routes. Changing it is the risky step: done as a guarded switchover."""

    kind = "uplink"
    after = (Bridge,)

    def __init__(self, desired: Desired) -> None:
        host = desired.host
        super().__init__(host.uplink)
        addrs = [str(host.ipv4.address)]
        if host.ipv6 is not None:
            addrs.append(str(host.ipv6.address))
        self.target = switchover.Target(
            uplink=host.uplink, bridge=host.switch.external, switch_kind=host.switch.kind,
            netdev=host.switch.kind == "ovs" and host.switch.datapath == "netdev",
            addresses=addrs, gateway4=str(host.ipv4.gateway),
            gateway6=str(host.ipv6.gateway) if host.ipv6 else None,
            ifup=tuple(interfaces.raised_at_boot(desired)),
            onlink4=host.ipv4.onlink_gateway,
        )

    def _missing(self, ctx: Context) -> list[str]:
        t = self.target
        nl = links.driver(ctx)
        sw = switch.driver(ctx)
        if nl.link(t.uplink) is None:
            raise FjordError(f"the uplink {t.uplink} does not exist",
                             hint="set host.uplink to the server's physical NIC")
        todo = []
        if sw.port_bridge(t.uplink) != t.bridge:
            todo.append(f"{t.uplink} into {t.bridge}")
        have = {str(a) for a in nl.addresses(t.bridge)}
        move = [a for a in t.addresses if a not in have]
        if move:
            todo.append("addresses " + ", ".join(move) + f" onto {t.bridge}")
        left = nl.addresses(t.uplink)
        if left:
            todo.append(f"no address on {t.uplink}")
        if t.onlink4 and not any(r.dst == f"{t.gateway4}/32" and r.gateway is None
                                 for r in nl.routes(socket.AF_INET, dev=t.bridge)):
            todo.append(f"route to the gateway {t.gateway4} on-link on {t.bridge}")
        for fam, gw in ((socket.AF_INET, t.gateway4), (socket.AF_INET6, t.gateway6)):
            if gw is None:
                continue
            r = nl.default_route(fam)
            if r is None or r.dev != t.bridge or ip_address(r.gateway or "::") != ip_address(gw):
                todo.append(f"default route via {gw} dev {t.bridge}")
        if t.netdev and not uplink_filter.loaded(ctx.open(nft.DRIVER)):
            todo.append(f"ingress guard on {t.uplink} (userspace datapath)")
        return todo

    def changes(self, ctx: Context) -> list[Change]:
        todo = self._missing(ctx)
        if not todo:
            return []
        timeout = ctx.options.confirm_timeout
        prompt = ctx.options.confirm_prompt

        def run(c: Context) -> None:
            c.close()  # fresh connections after the links move
            switchover.execute(self.target, confirm_timeout=timeout, prompt=prompt)

        return [Change(self.id, "update", "switchover: " + "; ".join(todo)
                       + " (verified, rolled back automatically on failure)", run, risky=True)]

    def unchanged_reason(self, ctx: Context) -> str:
        t = self.target
        return f"{t.uplink} is a port of {t.bridge}, which holds the public addresses"


class Address(Resource):
    """An address on a link (not the public ones: those move with the switchover)."""

    kind = "address"

    def __init__(self, dev: str, address: str, reason: str, after: tuple[Reference, ...]) -> None:
        super().__init__(f"{address} on {dev}")
        self.dev = dev
        self.address = ip_interface(address)
        self.reason = reason
        self.after = after

    def changes(self, ctx: Context) -> list[Change]:
        nl = links.driver(ctx)
        link_local = self.address.ip.is_link_local
        if nl.link(self.dev) is not None and self.address in nl.addresses(
                self.dev, link_local=link_local):
            return []
        return [Change(self.id, "create", f"address {self.address} on {self.dev} "
                       f"({self.reason})",
                       lambda c: links.driver(c).add_address(self.dev, self.address))]


class HostRoute(Resource):
    """A /128 route to a container's public IPv6 address (routed mode)."""

    kind = "route"

    def __init__(self, dst: IPv6Address, dev: str, container: str) -> None:
        super().__init__(f"{dst}/128 dev {dev}")
        self.dst = f"{dst}/128"
        self.dev = dev
        self.container = container
        self.after = (Bridge, Address)

    def changes(self, ctx: Context) -> list[Change]:
        nl = links.driver(ctx)
        if any(r.dst == self.dst and r.dev == self.dev
               for r in nl.routes(socket.AF_INET6, dev=self.dev)):
            return []
        return [Change(self.id, "create", f"route {self.dst} to container "
                       f"{self.container} via {self.dev}",
                       lambda c: links.driver(c).replace_route(self.dst, self.dev))]


class ProxyNdp(Resource):
    """Answer the provider's neighbour solicitations for a container's address."""

    kind = "proxy-ndp"

    def __init__(self, addr: IPv6Address, dev: str, container: str) -> None:
        super().__init__(f"{addr} on {dev}")
        self.addr = addr
        self.dev = dev
        self.container = container
        self.after = (Uplink,)

    def changes(self, ctx: Context) -> list[Change]:
        if self.addr in links.driver(ctx).proxy_neighbours(self.dev):
            return []
        return [Change(self.id, "create", f"proxy NDP for {self.addr} (container "
                       f"{self.container}) on {self.dev}",
                       lambda c: links.driver(c).add_proxy(self.dev, self.addr))]


class StaleProxyNdp(Resource):
    """Proxy entries on the external bridge for addresses no container has any more."""

    kind = "proxy-ndp-cleanup"

    def __init__(self, dev: str, keep: set[IPv6Address], prefix: Any) -> None:
        super().__init__(dev)
        self.dev, self.keep, self.prefix = dev, keep, prefix
        self.after = (ProxyNdp,)

    def changes(self, ctx: Context) -> list[Change]:
        stale = sorted(a for a in links.driver(ctx).proxy_neighbours(self.dev)
                       if a in self.prefix and a not in self.keep)
        return [Change(f"proxy-ndp {a} on {self.dev}", "delete",
                       f"proxy NDP for {a}: no container has it any more", self._remover(a))
                for a in stale]

    def _remover(self, addr: IPv6Address) -> Any:
        return lambda c: links.driver(c).delete_proxy(self.dev, addr)


class StaleHostRoutes(Resource):
    """/128 routes on the internal bridge, in the host's prefix, to addresses no container
    has any more (a container pruned, readdressed, or the host no longer routed): the
    internal bridge is fjord's, so what it does not declare there goes."""

    kind = "route-cleanup"

    def __init__(self, dev: str, keep: set[IPv6Address], prefix: Any) -> None:
        super().__init__(dev)
        self.dev, self.keep, self.prefix = dev, keep, prefix
        self.after = (HostRoute,)

    def changes(self, ctx: Context) -> list[Change]:
        nl = links.driver(ctx)
        if nl.link(self.dev) is None:
            return []
        stale = sorted(r.dst for r in nl.routes(socket.AF_INET6, dev=self.dev)
                       if r.dst.endswith("/128") and ip_interface(r.dst).ip in self.prefix
                       and ip_interface(r.dst).ip not in self.keep)
        return [Change(f"route {dst} dev {self.dev}", "delete",
                       f"route {dst} via {self.dev}: no container has it any more",
                       self._remover(dst)) for dst in stale]

    def _remover(self, dst: str) -> Any:
        return lambda c: links.driver(c).delete_route(dst, self.dev)


class StaleAddresses(Resource):
    """The internal bridge is fjord's: a global address on it that the file no longer
    declares (the private network moved) is removed, so the old gateway answers no more.
    Link-local addresses are left alone (the kernel's own, and fe80::1 when routed is
    declared by an Address resource)."""

    kind = "address-cleanup"

    def __init__(self, dev: str, keep: set[Any]) -> None:
        super().__init__(dev)
        self.dev, self.keep = dev, keep
        self.after = (Address,)

    def changes(self, ctx: Context) -> list[Change]:
        nl = links.driver(ctx)
        if nl.link(self.dev) is None:
            return []
        stale = sorted((a for a in nl.addresses(self.dev) if a not in self.keep), key=str)
        return [Change(f"address {a} on {self.dev}", "delete",
                       f"address {a} on {self.dev}: no longer declared (host.private)",
                       self._remover(a)) for a in stale]

    def _remover(self, addr: Any) -> Any:
        return lambda c: links.driver(c).delete_address(self.dev, addr)


def guarded_ports(desired: Desired) -> list[portguard.Port]:
    """Each container's port on the internal bridge and what it may send from."""
    host = desired.host
    routed = host.ipv6 is not None and host.ipv6.effective_mode == "routed"
    out = []
    for c in desired.containers:
        v6 = [portguard.link_local(c.mac_private)]
        if routed and c.ipv6 is not None:
            v6.append(c.ipv6)
        out.append(portguard.Port(c.name, portguard.mac(c.mac_private), c.ipv4, tuple(v6)))
    return out


class GuardState(File):
    """What each container may send, for libvirt's hook: it rebuilds the internal
    bridge's flows from this file after every container start and stop (boot too).
    Written before any container starts."""

    kind = "port-guard-state"


class PortGuard(Resource):
    """The internal bridge's OpenFlow table: each running container's port may send only
    from its MAC and addresses (fjord.net.portguard); other ports keep NORMAL."""

    kind = "flows"

    def __init__(self, bridge: str, ports: list[portguard.Port]) -> None:
        super().__init__(bridge)
        self.bridge = bridge
        self.ports = ports
        self.after = (Ref(Bridge, bridge), GuardState, ContainerResource)

    def _wanted(self) -> list[portguard.Flow]:
        return portguard.table(self.ports, portguard.ofports(self.bridge))

    def changes(self, ctx: Context) -> list[Change]:
        exists = self.bridge in switch.driver(ctx).bridges()  # StateUnreadable without OVS
        try:
            numbers = portguard.ofports(self.bridge) if exists else {}
            flows = portguard.table(self.ports, numbers)
            diff = portguard.differences(self.bridge, flows) if exists else []
        except portguard.GuardError as exc:
            raise FjordError(f"Open vSwitch flows of {self.bridge}: {exc}") from exc
        if exists and not diff:
            return []
        names = [p.container for p in self.ports if p.mac in numbers]
        who = ", ".join(names) if names else "no container running"
        detail = (f"OpenFlow table of {self.bridge}: anti-spoofing for {who} "
                  f"({len(flows)} flows)")
        if exists:
            detail += f", {sum(1 for d in diff if d[0] == '+')} to add, " \
                      f"{sum(1 for d in diff if d[0] == '-')} to remove"
        return [Change(self.id, "update" if exists else "create", detail, self._replace,
                       diff="".join(d + "\n" for d in diff) or None)]

    def _replace(self, ctx: Context) -> None:
        try:
            with portguard.locked(state_dir()):
                portguard.replace(self.bridge, self._wanted())
        except portguard.GuardError as exc:
            raise FjordError(f"Open vSwitch flows of {self.bridge}: {exc}") from exc

    def unchanged_reason(self, ctx: Context) -> str:
        return (f"{self.bridge}: each running container's port sends only from its own "
                f"MAC and addresses")


def guard_resources(desired: Desired) -> list[Resource]:
    sw = desired.host.switch
    if sw.kind != "ovs":
        return []
    ports = guarded_ports(desired)
    state = GuardState(portguard.state_path(state_dir()),
                       portguard.render_state(sw.internal, ports), mode=0o644,
                       reason="what each container may send, for libvirt's hook")
    return [state, PortGuard(sw.internal, ports)]


class InterfacesFile(File):
    """/etc/network/interfaces, rendered at plan time: the external bridge's stanza
    carries the uplink's MAC as the host has it, and the current file's source lines
    (the provider's `source /etc/network/interfaces.d/*`) are kept."""

    def __init__(self, desired: Desired) -> None:
        super().__init__(INTERFACES, None, reason="bring the bridges up at boot",
                         after=(Uplink,))
        self.desired = desired

    def changes(self, ctx: Context) -> list[Change]:
        uplink = links.driver(ctx).link(self.desired.host.uplink)
        current = self._read()[0]
        keep = interfaces.sources(current.decode(errors="replace") if current else None)
        self.content = interfaces.render(
            self.desired, mac=uplink.mac if uplink is not None else None, keep=keep,
        ).encode()
        self._check_sourced(ctx, keep)
        return super().changes(ctx)

    def _check_sourced(self, ctx: Context, keep: list[str]) -> None:
        """A kept file that declares the uplink or a bridge too (cloud-init's
        50-cloud-init, say) would be configured with fjord's stanza at boot: say so."""
        host = self.desired.host
        names = [host.uplink, host.switch.external, host.switch.internal]
        for path in interfaces.sourced_files(keep, self.path.parent):
            try:
                clash = interfaces.declares(path.read_text(errors="replace"), names)
            except OSError:
                continue
            if clash:
                ctx.warn(f"{path} (included by {self.path}) also declares "
                         f"{', '.join(sorted(clash))}: at boot ifupdown would apply it as "
                         f"well as fjord's stanzas; remove those lines from it")


def resources(desired: Desired) -> list[Resource]:
    host = desired.host
    sw = host.switch
    datapath = sw.datapath if sw.kind == "ovs" else "system"
    # a Linux bridge's own MAC follows its ports unless set: see interfaces.internal_mac
    internal = Bridge(sw.internal, datapath=datapath, role="the containers' private network",
                      mac_of=host.uplink if sw.kind == "linux-bridge" else None,
                      derived=sw.kind == "linux-bridge")
    out: list[Resource] = [
        Bridge(sw.external, datapath=datapath, mac_of=host.uplink,
               role=f"uplink {host.uplink} and the public addresses"),
        internal,
        Address(sw.internal, str(host.private.address), "the containers' IPv4 gateway",
                after=(internal,)),
        StaleAddresses(sw.internal, {ip_interface(str(host.private.address))}),
    ]
    if sw.kind == "ovs" and sw.datapath == "netdev":
        out.append(File(uplink_filter.PERSISTED, uplink_filter.render(host.uplink),
                        reason="uplink ingress guard, loaded at boot by ifupdown"))
    out.append(Uplink(desired))
    routed: set[IPv6Address] = set()
    if host.ipv6 is not None and host.ipv6.effective_mode == "routed":
        out.append(Address(sw.internal, f"{interfaces.ROUTED_GATEWAY6}/64",
                           "the containers' IPv6 gateway", after=(internal,)))
        keep = set()
        for c in desired.containers:
            if c.ipv6 is None:
                continue
            out.append(HostRoute(c.ipv6, sw.internal, c.name))
            routed.add(c.ipv6)
            if host.ipv6.proxy_ndp:
                out.append(ProxyNdp(c.ipv6, sw.external, c.name))
                keep.add(c.ipv6)
        if host.ipv6.proxy_ndp:
            out.append(StaleProxyNdp(sw.external, keep, host.ipv6.address.network))
    if host.ipv6 is not None:
        out.append(StaleHostRoutes(sw.internal, routed, host.ipv6.address.network))
    out.append(InterfacesFile(desired))
    out += guard_resources(desired)
    return out
