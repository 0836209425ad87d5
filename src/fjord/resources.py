"""The catalogue: every resource that makes up a host, from the desired state, in the
order a human would do the work (the engine then orders by dependency), and the
registry of resource kinds. This is the only module that knows every layer.

Adding a resource kind (docs/architecture.md, "Adding a resource kind"): write its
Resource class in its layer's module, list the class in :func:`registry`, and return
its resources from the layer's ``resources(desired)``."""

from __future__ import annotations

from functools import cache

from fjord.config.desired import Desired
from fjord.engine.resource import Resource


@cache
def registry() -> tuple[tuple[str, type[Resource]], ...]:
    """Every resource class, with the layer that defines it (host, network, containers;
    a host File may serve the network layer too)."""
    from fjord.containers.allocations import Allocations
    from fjord.containers.resources import (
        DomainResource,
        ImageResource,
        Orphan,
        RootResource,
        RunningResource,
    )
    from fjord.host.apt import AptUpdate, SourcesFile, StaleSources
    from fjord.host.boot_order import BootOrder
    from fjord.host.cgroups import CgroupCheck, UpdateGrub
    from fjord.host.files import File
    from fjord.host.hosts_file import HostsBlock
    from fjord.host.libvirt_conf import EditedFile
    from fjord.host.packages import Packages
    from fjord.host.services import Service
    from fjord.host.sysctl import Sysctl
    from fjord.host.system import MountPoint
    from fjord.net.firewall import Firewall
    from fjord.net.input_firewall import InputFirewall
    from fjord.net.netmanagers import OtherNetworkManagers
    from fjord.net.resources import (
        Address,
        Bridge,
        GuardState,
        HostRoute,
        InterfacesFile,
        PortGuard,
        ProxyNdp,
        StaleAddresses,
        StaleHostRoutes,
        StaleProxyNdp,
        Uplink,
    )

    host: list[type[Resource]] = [
        Sysctl, File, SourcesFile, StaleSources, AptUpdate, Packages, EditedFile, BootOrder,
        Service, CgroupCheck, UpdateGrub, MountPoint]
    network: list[type[Resource]] = [
        OtherNetworkManagers, Bridge, InterfacesFile, Uplink, Address, HostRoute, ProxyNdp,
        StaleProxyNdp, StaleHostRoutes, StaleAddresses, GuardState, PortGuard, Firewall,
        InputFirewall]
    containers: list[type[Resource]] = [
        Allocations, ImageResource, RootResource, DomainResource, RunningResource, Orphan,
        HostsBlock]
    return tuple((layer, cls) for layer, classes in
                 (("host", host), ("network", network), ("containers", containers))
                 for cls in classes)


def kinds() -> dict[str, tuple[type[Resource], ...]]:
    """Each kind's name (the first word(s) of its resources' ids) -> its classes."""
    out: dict[str, tuple[type[Resource], ...]] = {}
    for _, cls in registry():
        out[cls.kind] = (*out.get(cls.kind, ()), cls)
    return out


def host_resources(desired: Desired) -> list[Resource]:
    from fjord.host import sysctl, system

    registry()  # every kind known, for the references to the layers left out

    return [*sysctl.resources(desired), *system.resources(desired)]


def network_resources(desired: Desired) -> list[Resource]:
    from fjord.net import firewall, input_firewall, resources
    from fjord.net.netmanagers import OtherNetworkManagers

    registry()
    sw = desired.host.switch
    managers = OtherNetworkManagers(desired.host.uplink, (sw.external, sw.internal))
    return [managers, *resources.resources(desired), *firewall.resources(desired),
            *input_firewall.resources(desired)]


def container_resources(desired: Desired, recorded: Desired | None = None) -> list[Resource]:
    """The containers' resources; ``recorded``: the desired state whose allocations are
    written (``desired`` before --prune: the containers it destroys free theirs as they
    go, so that a failed destroy keeps its addresses taken)."""
    from fjord.config.desired import with_kept
    from fjord.containers import resources
    from fjord.containers.allocations import Allocations
    from fjord.host.hosts_file import HostsBlock

    registry()
    allocations = (recorded or desired).allocations
    return [Allocations(allocations), *resources.resources(desired, allocations),
            HostsBlock(with_kept(desired))]


LAYERS = ("host", "network", "containers")


def all_resources(desired: Desired, only: frozenset[str] | None = None, *,
                  prune: bool = False) -> list[Resource]:
    """Every resource, or only those of the named layers (host, network, containers).

    Containers that left the file keep their network (routes, proxy NDP, firewall,
    names) until they are pruned: the network layer sees them, the container layer
    reports them (and destroys them with ``prune``): with ``prune``, every layer sees
    what is left once they are gone (no name, route, proxy NDP or rule of theirs)."""
    from fjord.config.desired import with_kept
    from fjord.containers.resources import without_kept

    recorded = desired
    if prune:
        desired = without_kept(desired)
    seen = desired if prune else with_kept(desired)
    out: list[Resource] = []
    for name in LAYERS:
        if only is not None and name not in only:
            continue
        if name == "host":
            out += host_resources(seen)
        elif name == "network":
            out += network_resources(seen)
        else:
            out += container_resources(desired, recorded)
    if only is None or set(LAYERS) <= only:
        from fjord.engine.order import dependency_map

        dependency_map(out, complete=True)  # every `after` finds its resource
    return out
