"""What the host holds, as the unit tests give it to fjord.config.desired.load: a host
whose release is known (host.apt.suite's default), as fjord.state.known reads it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fjord.config.desired import HostRelease, Known

# os-release files of Debian 12, 13, testing/unstable and another distribution; conftest
# makes the bookworm one every unit test's host release (never the machine's own).
OS_RELEASES = Path(__file__).parent / "configs" / "os-release"

BOOKWORM = HostRelease("bookworm", "VERSION_CODENAME=bookworm")
TRIXIE = HostRelease("trixie", "VERSION_CODENAME=trixie")


def on(release: HostRelease = BOOKWORM,
       addresses: Mapping[str, Mapping[str, str]] | None = None) -> Known:
    """A host running ``release`` (default bookworm), with these allocations."""
    return Known(addresses=addresses or {}, host_release=release)


ON_BOOKWORM = on(BOOKWORM)
