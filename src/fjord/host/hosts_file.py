"""The host resolves its containers by name: a block fjord owns in /etc/hosts, between
two marker lines; everything else in the file stays as it is."""

from __future__ import annotations

from pathlib import Path

from fjord.config.desired import Desired
from fjord.engine.change import Change
from fjord.engine.resource import Context, Resource
from fjord.host.files import File

HOSTS = Path("/etc/hosts")
BEGIN = "# BEGIN fjord containers (managed by fjord apply)"
END = "# END fjord containers"


def block(desired: Desired) -> list[str]:
    lines = []
    for c in desired.containers:
        short = c.fqdn.partition(".")[0]
        lines.append(f"{c.ipv4}\t{c.fqdn} {short}")
        if c.ipv6 is not None:
            lines.append(f"{c.ipv6}\t{c.fqdn} {short}")
    return lines


def merge(current: str, lines: list[str]) -> str:
    """``current`` with fjord's block replaced (or appended; or removed when empty)."""
    kept, inside = [], False
    for line in current.splitlines():
        if line.strip() == BEGIN:
            inside = True
            continue
        if line.strip() == END and inside:
            inside = False
            continue
        if not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    if lines:
        kept += ["", BEGIN, *lines, END]
    return "\n".join(kept) + "\n"


class HostsBlock(Resource):
    kind = "hosts"

    def __init__(self, desired: Desired, path: Path = HOSTS) -> None:
        super().__init__(str(path))
        self.lines = block(desired)
        self.path = path

    def _file(self) -> File:
        try:
            current = self.path.read_text()
        except FileNotFoundError:
            current = "127.0.0.1\tlocalhost\n"
        return File(self.path, merge(current, self.lines),
                    reason=f"names of {len(self.lines)} container address(es)")

    def changes(self, ctx: Context) -> list[Change]:
        return self._file().changes(ctx)

    def unchanged_reason(self, ctx: Context) -> str:
        return "the containers' names are in /etc/hosts"
