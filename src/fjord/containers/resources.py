"""Containers as engine resources, one chain per container:

    image (shared, built once) → root filesystem (made and customised) → libvirt domain
    (defined, redefined when the file changes, autostart) → running, or stopped as declared

A container that is no longer in the file is reported, and destroyed only with
`fjord apply --prune`: data is never deleted silently."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fjord.config.desired import Container, Desired
from fjord.config.models import BUILT_IN
from fjord.containers import customize, lifecycle, rootfs
from fjord.containers.domain import Domain, differences, domain_for, xml_diff
from fjord.containers.hook import HOOK_PATH, hook_script
from fjord.containers.image import ImageCache, ImageSpec, spec_for
from fjord.containers.kind import ContainerResource
from fjord.containers.libvirt import driver as libvirt
from fjord.containers.limits import memory_limit, same_limit
from fjord.containers.tree import Refused
from fjord.engine.change import Change
from fjord.engine.order import Ref
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, DriverKey, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.host.packages import Packages
from fjord.net.switch import driver as switch
from fjord.state import allocations
from fjord.state.records import RECORD

if TYPE_CHECKING:
    from fjord.net.ovs import Ovs

# What libvirt can change in a running LXC container; anything else needs a restart.
LIVE = {"memory", "CPU shares"}


IMAGES: DriverKey[ImageCache] = DriverKey("images", lambda env: ImageCache(env.images_dir))


def _ovs(ctx: Context) -> Ovs | None:
    """The run's OVSDB connection when the switch is Open vSwitch (one per run: starting
    a container reuses it to remove stale ports)."""
    if ctx.desired.host.switch.kind != "ovs":
        return None
    from fjord.net.ovs import driver as ovs

    return ovs(ctx)


def _cache(ctx: Context) -> ImageCache:
    return ctx.open(IMAGES)


class ImageResource(Resource):
    kind = "image"
    after = (Ref(Packages, "host"),)

    def __init__(self, spec: ImageSpec, users: list[str]) -> None:
        super().__init__(spec.key)
        self.spec = spec
        self.users = users

    def changes(self, ctx: Context) -> list[Change]:
        if _cache(ctx).get(self.spec.key) is not None:
            return []
        extra = sorted(self.spec.inputs().get("packages", []))
        what = f"{self.spec.inputs().get('suite')} with mmdebstrap ({len(extra)} packages)"

        def build(c: Context) -> None:
            # how far it is goes to the apply's reporter (the command owns the console)
            _cache(c).build(self.spec, lambda state: c.progress(self.id, state.fraction,
                                                                state.stage))

        return [Change(self.id, "create", f"build image {what} for "
                       f"{', '.join(self.users)} (cached afterwards)", build)]

    def unchanged_reason(self, ctx: Context) -> str:
        return f"image {self.spec.key} is cached"


NETWORK_FILE = "/etc/network/interfaces"


class RootResource(Resource):
    """The container's root filesystem: made from its image, customised."""

    kind = "rootfs"

    def __init__(self, container: Container, spec: ImageSpec) -> None:
        super().__init__(container.name)
        self.c = container
        self.spec = spec
        # its addresses recorded before it is made with them (it keeps them)
        from fjord.containers.allocations import Allocations
        from fjord.state.allocations import path

        self.after = (Ref(ImageResource, spec.key), Ref(Allocations, str(path())))

    def changes(self, ctx: Context) -> list[Change]:
        try:
            return self._changes(ctx)
        except Refused as exc:
            # this container's files only: the other containers and the host go on
            raise StateUnreadable(f"root of {self.c.name}: {exc.message}",
                                  hint=exc.hint) from exc

    def _changes(self, ctx: Context) -> list[Change]:
        layout = rootfs.RootfsLayout.of(self.c.name)
        record = rootfs.read_record(layout)
        if self.c.privileged_explicit:
            ctx.warn(f"container {self.c.name} is privileged (`privileged: true`): root in "
                     "it is root on the host, with no user namespace between them")
        if record is None:
            what = "overlay over" if self.c.rootfs == "overlay" else "full copy of"
            who = ("privileged" if self.c.privileged
                   else "unprivileged: a range of 65536 host ids of its own")
            return [Change(self.id, "create", f"root of {self.c.name}: {what} image "
                           f"{self.spec.key}, {who}, customised ({customised(self.c)})",
                           self._make)]
        if record.rebuilt is not None:
            return [Change(self.id, "update", f"rewrite the record of {self.c.name}: "
                           f"{record.rebuilt}"
                           + ("" if record.image else f"; its image taken as {self.spec.key}, "
                              "the one the file asks for"), self._make)]
        if record.image != self.spec.key or record.mode != self.c.rootfs:
            ctx.warn(f"container {self.c.name} was made as {record.mode} on image "
                     f"{record.image}; the file now asks for {self.c.rootfs} on "
                     f"{self.spec.key}. Its root is kept as it is (fjord never replaces a "
                     f"container's data); `fjord container destroy {self.c.name}` then "
                     f"`fjord apply` recreates it")
            return []
        if record.idmap is None and not self.c.privileged:
            state = libvirt(ctx).domain(self.c.name)
            running = state is not None and state.running
            where = "upper layer" if record.mode == "overlay" else "copy"
            return [Change(self.id, "update", f"make {self.c.name} unprivileged: the files "
                           f"of its {where} given to a range of 65536 host ids of its own "
                           "(its data kept), its domain redefined with the user namespace"
                           + (", restarted" if running else ""), self._unprivileged)]
        if record.idmap is not None and self.c.privileged:
            ctx.warn(f"container {self.c.name} was made unprivileged; the file now asks "
                     "for it privileged. It is kept as it is (fjord does not make a "
                     f"container privileged in place); `fjord container destroy "
                     f"{self.c.name}` then `fjord apply` recreates it, or drop "
                     "`privileged: true` for it")
        desired = after_prune(ctx)
        if record.mode == "overlay" and not rootfs.mounted(layout.rootfs):
            if self.c.state == "running":
                return [Change(self.id, "update", f"mount the overlay root of {self.c.name} "
                               "and check its customisation", self._make)]
            # declared stopped: its root is mounted when it starts (the libvirt hook);
            # until then it is looked at through a read-only view
            try:
                with lifecycle.overlay_view(layout, Path(record.lower)) as view:
                    pending = customize.pending(view, self.c, desired, record.idmap)
            except Refused:
                raise
            except FjordError as exc:  # not root (plan), or its image is missing
                pending = [f"(cannot look at it unmounted: {exc.message})"]
        else:
            pending = customize.pending(layout.rootfs, self.c, desired, record.idmap)
        if record.addresses != addresses(self.c):
            pending.append(f"{RECORD} (addresses)")
        if not pending:
            return []
        # A running container read its network file when it booted: a new address or
        # gateway takes a restart, or it stays unreachable at its declared address.
        state = libvirt(ctx).domain(self.c.name) if NETWORK_FILE in pending else None
        restart = state is not None and state.running
        return [Change(self.id, "update", f"customise {self.c.name}: {', '.join(pending)}"
                       + (" (restarted: its network changed)" if restart else ""),
                       self._make_and_restart if restart else self._make)]

    def _make_and_restart(self, ctx: Context) -> None:
        self._make(ctx)
        lv = libvirt(ctx)
        lifecycle.stop(lv, self.c.name)
        if self.c.state == "running":
            lifecycle.start(lv, ctx.desired, self.c, _ovs(ctx))

    def unchanged_reason(self, ctx: Context) -> str:
        kept, new = self.c.suite_kept, BUILT_IN["suite"]
        if kept is not None and kept != new:
            return (f"root of {self.c.name} exists and is customised; it stays on {kept}, "
                    f"the suite it was built from (new containers get {new}): to move it, "
                    f"`fjord container destroy {self.c.name}` then `fjord apply` re-create "
                    f"it on {new} (its data is not kept); `suite: {kept}` keeps it there "
                    "for good")
        return f"root of {self.c.name} exists and is customised"

    def _unprivileged(self, ctx: Context) -> None:
        """A privileged container made unprivileged, its data kept: stopped, its files
        (an overlay's upper layer: the image below is mounted idmapped) shifted to a
        range of its own, its record and domain updated, started again."""
        lv = libvirt(ctx)
        state = lv.domain(self.c.name)
        if state is not None and state.running:
            lifecycle.stop(lv, self.c.name)
        layout = rootfs.RootfsLayout.of(self.c.name)
        rootfs.make_unprivileged(layout)
        self._make(ctx)
        if state is not None:
            record = rootfs.read_record(layout)
            lv.define(domain_for(self.c, ctx.desired, layout.rootfs, state.uuid,
                                 record.idmap if record is not None else None).xml())
        if self.c.state == "running":
            lifecycle.start(lv, ctx.desired, self.c, _ovs(ctx))

    def _make(self, ctx: Context) -> None:
        image = _cache(ctx).get(self.spec.key)
        if image is None:
            raise FjordError(f"image {self.spec.key} is not built",
                             hint="fjord image build -c FILE")
        layout = rootfs.prepare(self.c.name, image, self.c.rootfs,  # type: ignore[arg-type]
                                privileged=self.c.privileged)
        record = rootfs.read_record(layout)
        customize.customize(layout.rootfs, self.c, after_prune(ctx),
                            owner=record.idmap if record is not None else None)
        rootfs.save_addresses(layout, addresses(self.c))


def after_prune(ctx: Context) -> Desired:
    """The desired state the containers are customised for: with `--prune`, what is left
    once the containers out of the file are destroyed (their names leave /etc/hosts in
    the same apply, not the next one)."""
    return without_kept(ctx.desired) if ctx.options.prune else ctx.desired


def without_kept(desired: Desired) -> Desired:
    """``desired`` as if the containers out of the file were gone: its remembered
    addresses only those of the file's containers, so that nothing (names, routes, proxy
    NDP, firewall) is kept for the others."""
    declared = {c.name for c in desired.containers}
    if all(name in declared for name in desired.allocations):
        return desired
    return replace(desired, allocations={k: v for k, v in desired.allocations.items()
                                         if k in declared})


def addresses(c: Container) -> dict[str, str]:
    """What the container's record keeps of its addresses (allocations.json's keys)."""
    out = {"ipv4": str(c.ipv4), "mac_private": c.mac_private}
    if c.ipv6 is not None and c.mac_public is not None:
        out.update(ipv6=str(c.ipv6), mac_public=c.mac_public)
    return out


class DomainResource(Resource):
    """The libvirt domain: defined as the file says, autostart as declared."""

    kind = "domain"

    def __init__(self, container: Container) -> None:
        super().__init__(container.name)
        self.c = container
        # the hook guards the container's port from the start it makes
        from fjord.containers.hook import HOOK_PATH
        from fjord.host.files import File
        from fjord.host.services import Service
        from fjord.net.resources import Bridge, GuardState

        self.after = (Ref(RootResource, container.name), Bridge, Ref(Service, "libvirtd"),
                      Ref(File, str(HOOK_PATH)), GuardState)

    def _wanted(self, ctx: Context, uuid: str | None) -> Domain:
        layout = rootfs.RootfsLayout.of(self.c.name)
        idmap = None
        try:
            record = rootfs.read_record(layout)
        except (PermissionError, FjordError):
            record = None
        if record is not None:
            idmap = record.idmap
        return domain_for(self.c, ctx.desired, layout.rootfs, uuid, idmap)

    def changes(self, ctx: Context) -> list[Change]:
        lv = libvirt(ctx)
        state = lv.domain(self.c.name)
        if state is None:
            wanted = self._wanted(ctx, None)
            ifaces = "; ".join(i.describe() for i in wanted.interfaces)
            return [Change(self.id, "create",
                           f"define {self.c.name}: {self.c.memory >> 20} MiB, "
                           f"{self.c.vcpus} vCPU, {ifaces}"
                           f"{', started at boot' if self.c.autostart else ''}",
                           self._define, diff=lambda: xml_diff(None, wanted))]
        actual = Domain.parse(state.xml)
        wanted = self._wanted(ctx, state.uuid)
        out = []
        diffs = differences(actual, wanted)
        if diffs:
            # libvirt can lower a running container's memory, not raise it past the
            # maximum it started with: a raise takes a restart.
            live = (all(d.split(":")[0] in LIVE for d in diffs)
                    and wanted.memory <= actual.memory)
            when = ("applied live" if live else "restarted to take effect") \
                if state.running else "at next start"
            out.append(Change(self.id, "update", f"redefine {self.c.name}: "
                              f"{'; '.join(diffs)} ({when})",
                              lambda c: self._redefine(c, wanted, live),
                              diff=lambda: xml_diff(state.xml, wanted)))
        elif state.running:
            out += self._limits(ctx, wanted)
        if state.autostart != self.c.autostart:
            out.append(Change(self.id, "update", f"autostart {self.c.name}: "
                              f"{'on' if self.c.autostart else 'off'}", self._autostart))
        return out

    def _limits(self, ctx: Context, wanted: Domain) -> list[Change]:
        """The running container's memory limit as its cgroup has it now: the
        container's root user can raise it (its cgroup is its own, writable from inside),
        and libvirt's domain XML would still say the declared value."""
        known, live = memory_limit(self.c.name)
        if not known or same_limit(live, wanted.memory):
            return []
        now = "no limit" if live is None else f"{live >> 20} MiB"
        return [Change(self.id, "update", f"restore the memory limit of {self.c.name}: "
                       f"its cgroup has {now}, the file says {wanted.memory >> 20} MiB "
                       "(applied live)",
                       lambda c: libvirt(c).set_memory_live(self.c.name,
                                                            wanted.memory // 1024))]

    def unchanged_reason(self, ctx: Context) -> str:
        return f"domain {self.c.name} is defined as declared"

    def _define(self, ctx: Context) -> None:
        lv = libvirt(ctx)
        lv.define(self._wanted(ctx, None).xml())
        lv.set_autostart(self.c.name, self.c.autostart)

    def _autostart(self, ctx: Context) -> None:
        libvirt(ctx).set_autostart(self.c.name, self.c.autostart)

    def _redefine(self, ctx: Context, wanted: Domain, live: bool) -> None:
        lv = libvirt(ctx)
        state = lv.domain(self.c.name)
        lv.define(wanted.xml())
        if state is None or not state.running:
            return
        if live:
            lv.set_memory_live(self.c.name, wanted.memory // 1024)
            lv.set_shares_live(self.c.name, wanted.cpu_shares)
        else:
            lifecycle.stop(lv, self.c.name)
            if self.c.state == "running":
                lifecycle.start(lv, ctx.desired, self.c, _ovs(ctx))


class RunningResource(ContainerResource):
    # several containers start at once: libvirt's start is mostly waiting (its
    # controller, the hooks, the init's handshake)
    concurrent = True

    def __init__(self, container: Container) -> None:
        super().__init__(container.name)
        self.c = container
        from fjord.net.firewall import Firewall
        from fjord.net.resources import Address, GuardState, HostRoute, ProxyNdp, Uplink

        # its network in place first: uplink, firewall, addresses, routes, proxy NDP, and
        # the guard's state file (the flows themselves come after the containers)
        self.after = (Ref(DomainResource, container.name), Uplink, Firewall, Address,
                      HostRoute, ProxyNdp, GuardState)

    def changes(self, ctx: Context) -> list[Change]:
        state = libvirt(ctx).domain(self.c.name)
        if self.c.state == "stopped":
            if state is None or not state.running:
                return []
            return [Change(self.id, "update", f"shut down {self.c.name} (declared stopped)",
                           lambda c: lifecycle.stop(libvirt(c), self.c.name))]
        if state is not None and state.running:
            return []
        if ctx.desired.host.switch.kind == "ovs":
            switch(ctx)  # opened here, not by the threads that start containers
        v6 = f", {self.c.ipv6}" if self.c.ipv6 else ""
        return [Change(self.id, "update", f"start {self.c.name} ({self.c.ipv4}{v6})",
                       self._start)]

    def _start(self, ctx: Context) -> None:
        lifecycle.start(libvirt(ctx), ctx.desired, self.c, _ovs(ctx))

    def unchanged_reason(self, ctx: Context) -> str:
        if self.c.state == "stopped":
            return f"{self.c.name} is stopped, as declared"
        return f"{self.c.name} is running"


class Orphan(ContainerResource):
    """A container fjord made that the file no longer names."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def changes(self, ctx: Context) -> list[Change]:
        layout = rootfs.RootfsLayout.of(self.name)
        domain = libvirt(ctx).domain(self.name)
        if not layout.base.exists() and domain is None:
            return self._gone(ctx)
        if not ctx.options.prune:
            ctx.warn(f"container {self.name} is not in the file: it is kept, "
                     f"{kept_as(domain)}; `fjord apply --prune` destroys it and its data")
            return []
        return [Change(self.id, "delete", f"destroy {self.name} and its root filesystem "
                       "(--prune)", lambda c: lifecycle.destroy(libvirt(c), self.name))]

    def _gone(self, ctx: Context) -> list[Change]:
        """Only its addresses are left (its root and domain were removed by hand, or
        long ago): kept with its network, as any container out of the file, until
        --prune frees them."""
        if self.name not in allocations.read():
            return []
        if not ctx.options.prune:
            ctx.warn(f"container {self.name} is gone (no root filesystem, no libvirt "
                     "domain) but its addresses, routes and names are kept; "
                     "`fjord apply --prune` frees them")
            return []
        return [Change(self.id, "delete", f"free the addresses of {self.name}: its root "
                       "filesystem and domain are gone (--prune)",
                       lambda c: allocations.forget([self.name]))]


def customised(c: Container) -> str:
    """What customising a new root writes, as the plan says it: only what is declared."""
    keys = len(c.ssh_keys)
    return ", ".join(["network", "names", "DNS"]
                     + ([f"{keys} SSH key{'s' if keys != 1 else ''}"] if keys else [])
                     + (["Puppet"] if c.puppet else []))


def kept_as(domain: Any) -> str:
    """How a container out of the file is kept, as its libvirt domain is now."""
    if domain is None:
        return "its root filesystem only (no libvirt domain)"
    return "running as it is" if domain.running else "stopped as it is"


def resources(desired: Desired, allocated: Iterable[str] = ()) -> list[Resource]:
    """The file's containers, and an `Orphan` for each that fjord made and the file no
    longer names: those with a record, and those of which only ``allocated`` addresses
    are left."""
    out: list[Resource] = []
    specs: dict[str, tuple[ImageSpec, list[str]]] = {}
    chains: list[Resource] = []
    for c in desired.containers:
        spec = spec_for(c, desired)
        specs.setdefault(spec.key, (spec, []))[1].append(c.name)
        chains.append(RootResource(c, spec))
    # every root, then every domain, then every start: the starts are neighbours in the
    # apply order, and run at the same time
    chains += [DomainResource(c) for c in desired.containers]
    chains += [RunningResource(c) for c in desired.containers]
    out += [ImageResource(spec, names) for spec, names in specs.values()]
    out += chains
    declared = {c.name for c in desired.containers}
    orphans = {r.name for r in rootfs.all_records()} | set(allocated)
    out += [Orphan(name) for name in sorted(orphans - declared)]
    return out


def hook_file(desired: Desired, root: Path = Path("/")) -> Any:
    """libvirt's LXC hook that mounts overlay roots before every start, boot included
    (and, on the userspace datapath, turns checksum offload off after every start)."""
    sw = desired.host.switch
    netdev = sw.kind == "ovs" and sw.datapath == "netdev"
    return File(root / HOOK_PATH.relative_to("/"), hook_script(offload_off=netdev), mode=0o755,
                reason="mount overlay roots before libvirt starts a container")
