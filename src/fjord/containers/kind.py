"""The kind ``container``, below the modules that make its resources.

The network layer's port guard comes after every container (``fjord.net.resources``:
its flows name the running containers' ports), and ``fjord.containers.resources``
imports the network layer's kinds for its own order (a container starts once its
network is there): the class that names the kind lives here, so that both can import
it without an import cycle."""

from __future__ import annotations

from fjord.engine.resource import Resource


class ContainerResource(Resource):
    """A container: one the file declares, running or stopped as it says
    (``RunningResource``), or one fjord made that the file no longer names (``Orphan``).
    As a reference in ``after``, every container."""

    kind = "container"
