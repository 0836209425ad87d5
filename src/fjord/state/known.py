"""What the host already holds that the desired state is resolved with: the addresses
handed out, the suite each existing container was built from, and the release the host
runs (its os-release). Read here, at the edge (the command line), and given to
:func:`fjord.config.desired.load`, which reads nothing but the file."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from fjord.config.desired import Desired, HostRelease, Known
from fjord.config.desired import load as load_file
from fjord.config.types import RELEASES
from fjord.environment import current
from fjord.state import allocations
from fjord.state.records import recorded_suites

# More than any os-release holds: a larger file is not one (read no further).
LARGEST_OS_RELEASE = 64 << 10


def built_suites() -> dict[str, str]:
    """The suite each existing container was built from (its record's image key)."""
    return {n: s for n, s in recorded_suites().items() if s in RELEASES}


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): ``KEY=value`` lines, values optionally quoted as in a shell;
    comments, blank lines and lines that are not assignments are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        key, eq, raw = line.partition("=")
        if not eq or line.startswith("#") or not key.replace("_", "").isalnum():
            continue
        try:
            words = shlex.split(raw, comments=False, posix=True)
        except ValueError:  # an unbalanced quote: the text as it is
            words = [raw.strip("\"'")]
        out[key] = " ".join(words)
    return out


def release_of(fields: dict[str, str], path: str) -> HostRelease:
    """The release an os-release describes: its ``VERSION_CODENAME`` when the system is
    Debian (``ID=debian``) and fjord knows that release (types.RELEASES), else none.
    Debian testing and unstable name the next release (``VERSION_CODENAME=forky``,
    ``PRETTY_NAME="Debian GNU/Linux forky/sid"``), or no codename at all: taken only
    when it is a release fjord knows; nothing is guessed from PRETTY_NAME."""
    codename = fields.get("VERSION_CODENAME", "")
    if fields.get("ID", "linux") == "debian" and codename in RELEASES:
        return HostRelease(codename, f"VERSION_CODENAME={codename}", path)
    shown = [f"{k}={fields[k]}" for k in ("ID", "VERSION_CODENAME") if fields.get(k)]
    if not codename:
        shown.append("no VERSION_CODENAME")
    if fields.get("PRETTY_NAME"):
        shown.append(f'PRETTY_NAME="{fields["PRETTY_NAME"]}"')
    return HostRelease(None, ", ".join(shown), path)


def host_release(paths: Sequence[Path] | None = None) -> HostRelease:
    """The release the host runs, from the first of ``paths`` that exists (default:
    the environment's, /etc/os-release then /usr/lib/os-release)."""
    candidates = list(current().os_release if paths is None else paths)
    for path in candidates:
        try:
            with open(path, "rb") as f:
                data = f.read(LARGEST_OS_RELEASE)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return HostRelease(None, f"unreadable ({exc.strerror or exc})", str(path))
        return release_of(parse_os_release(data.decode(errors="replace")), str(path))
    shown = str(candidates[0]) if candidates else "/etc/os-release"
    return HostRelease(None, "no such file", shown)


def known(*, fresh: bool = False) -> Known:
    """The host's allocations, containers' suites and release; ``fresh``: the suites as
    on a server with no container yet (a lab's), the allocations still this host's."""
    return Known(addresses=allocations.read(), suites={} if fresh else built_suites(),
                 host_release=host_release())


def load(path: str, *, fresh: bool = False) -> Desired:
    """The file's desired state on this host (raises ConfigError, exit 2)."""
    return load_file(path, known=known(fresh=fresh))
