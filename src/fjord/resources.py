"""The catalogue: every resource that makes up a host, from the desired state, in the
order a human would do the work (the engine then orders by dependency)."""

from __future__ import annotations

from fjord.config.desired import Desired
from fjord.engine.resource import Resource


def host_resources(desired: Desired) -> list[Resource]:
    from fjord.host import sysctl, system

    return [*sysctl.resources(desired), *system.resources(desired)]


def network_resources(desired: Desired) -> list[Resource]:
    from fjord.host.netmanagers import OtherNetworkManagers
    from fjord.net import firewall, resources

    sw = desired.host.switch
    managers = OtherNetworkManagers(desired.host.uplink, (sw.external, sw.internal))
    return [managers, *resources.resources(desired), *firewall.resources(desired)]


def container_resources(desired: Desired) -> list[Resource]:
    from fjord.config.desired import with_kept
    from fjord.containers import resources
    from fjord.host.hosts_file import HostsBlock

    return [*resources.resources(desired), HostsBlock(with_kept(desired))]


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

    if prune:
        desired = without_kept(desired)
    seen = desired if prune else with_kept(desired)
    layers = {"host": host_resources, "network": network_resources,
              "containers": container_resources}
    out: list[Resource] = []
    for name in LAYERS:
        if only is None or name in only:
            out += layers[name](desired if name == "containers" else seen)
    return out
