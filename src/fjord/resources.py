"""The catalogue: every resource that makes up a host, from the desired state, in the
order a human would do the work (the engine then orders by dependency)."""

from __future__ import annotations

from fjord.config.desired import Desired
from fjord.engine.resource import Resource


def host_resources(desired: Desired) -> list[Resource]:
    from fjord.host import sysctl, system

    return [*sysctl.resources(desired), *system.resources(desired)]


def network_resources(desired: Desired) -> list[Resource]:
    from fjord.net import firewall, resources

    return resources.resources(desired) + firewall.resources(desired)


def container_resources(desired: Desired) -> list[Resource]:
    from fjord.containers import resources
    from fjord.host.hosts_file import HostsBlock

    return [*resources.resources(desired), HostsBlock(desired)]


LAYERS = ("host", "network", "containers")


def all_resources(desired: Desired, only: frozenset[str] | None = None) -> list[Resource]:
    """Every resource, or only those of the named layers (host, network, containers)."""
    layers = {"host": host_resources, "network": network_resources,
              "containers": container_resources}
    out: list[Resource] = []
    for name in LAYERS:
        if only is None or name in only:
            out += layers[name](desired)
    return out
