"""What the host already holds that the desired state is resolved with: the addresses
handed out and the suite each existing container was built from. Read here, at the
edge (the command line), and given to :func:`fjord.config.desired.load`, which reads
nothing but the file."""

from __future__ import annotations

from fjord.config.desired import Desired, Known
from fjord.config.desired import load as load_file
from fjord.config.types import RELEASES
from fjord.state import allocations
from fjord.state.records import recorded_suites


def built_suites() -> dict[str, str]:
    """The suite each existing container was built from (its record's image key)."""
    return {n: s for n, s in recorded_suites().items() if s in RELEASES}


def known(*, fresh: bool = False) -> Known:
    """The host's allocations and containers' suites; ``fresh``: the suites as on a
    server with no container yet (a lab's image), the allocations still this host's."""
    return Known(addresses=allocations.read(), suites={} if fresh else built_suites())


def load(path: str, *, fresh: bool = False) -> Desired:
    """The file's desired state on this host (raises ConfigError, exit 2)."""
    return load_file(path, known=known(fresh=fresh))
