"""Recording the addresses handed out (/var/lib/fjord/allocations.json) as a change of the
plan: the desired state allocated them (fjord.config.desired, from what the state layer
read), this resource writes them before any container is made with them, so that a
container keeps its addresses on every later run. Destroying a container frees them
(fjord.state.allocations.forget, from fjord.containers.lifecycle)."""

from __future__ import annotations

from collections.abc import Mapping

from fjord.engine.change import Change
from fjord.engine.resource import Context, Resource
from fjord.state import allocations


class Allocations(Resource):
    """allocations.json holds what the desired state allocated: the file's containers'
    addresses, and those of the containers out of the file not yet pruned."""

    kind = "allocations"

    def __init__(self, wanted: Mapping[str, Mapping[str, str]]) -> None:
        super().__init__(str(allocations.path()))
        self.wanted = {n: dict(v) for n, v in wanted.items()}

    def changes(self, ctx: Context) -> list[Change]:
        stored = allocations.stored()
        old = stored or {}
        if stored is not None and old == self.wanted:
            return []
        if stored is None and not self.wanted:
            return []  # nothing handed out, nothing to remember
        new = sorted(n for n in self.wanted if n not in old)
        moved = sorted(n for n in self.wanted if n in old and old[n] != self.wanted[n])
        gone = sorted(n for n in old if n not in self.wanted)
        parts = []
        if new:
            parts.append(f"record the addresses of {', '.join(new)}")
        if moved:
            parts.append(f"record the new addresses of {', '.join(moved)}")
        if gone:
            parts.append(f"forget the addresses of {', '.join(gone)}")
        what = "; ".join(parts) or "rewrite"
        return [Change(self.id, "update" if allocations.path().exists() else "create",
                       f"{what} in {self.name}", self._write)]

    def _write(self, ctx: Context) -> None:
        allocations.write(self.wanted)

    def unchanged_reason(self, ctx: Context) -> str:
        n = len(self.wanted)
        return f"{self.name} records the addresses of {n} container{'s' if n != 1 else ''}"
