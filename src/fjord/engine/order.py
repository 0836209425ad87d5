"""Dependency order of resources: a stable topological sort."""

from __future__ import annotations

from collections.abc import Sequence

from fjord.engine.resource import Resource
from fjord.errors import FjordError


def _deps(r: Resource, resources: Sequence[Resource], ids: dict[str, Resource]) -> list[str]:
    """The ids ``r`` comes after (its ``after``: ids, or kind prefixes)."""
    out = []
    for ref in r.after:
        if ref in ids:
            out.append(ref)
        else:
            out.extend(x.id for x in resources if x.kind == ref and x.id != r.id)
    return out


def dependents(resources: Sequence[Resource], of: str) -> set[str]:
    """The ids of the resources that come after ``of``, directly or through others."""
    ids = {r.id: r for r in resources}
    found: set[str] = set()
    todo = [of]
    while todo:
        current = todo.pop()
        for r in resources:
            if r.id not in found and current in _deps(r, resources, ids):
                found.add(r.id)
                todo.append(r.id)
    return found


def order(resources: Sequence[Resource]) -> list[Resource]:
    """Resources in dependency order; the declared order where no dependency decides.

    ``after`` entries may name a resource id exactly or a kind prefix ("ovs-bridge")."""
    ids = {r.id: r for r in resources}
    if len(ids) != len(resources):
        dup = sorted({r.id for r in resources if [x.id for x in resources].count(r.id) > 1})
        raise FjordError(f"internal: resources declared twice: {', '.join(dup)}")
    position = {r.id: i for i, r in enumerate(resources)}

    def deps(r: Resource) -> list[str]:
        return _deps(r, resources, ids)

    done: list[Resource] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(r: Resource, chain: list[str]) -> None:
        if state.get(r.id) == 2:
            return
        if state.get(r.id) == 1:
            raise FjordError("internal: dependency cycle: " + " -> ".join([*chain, r.id]))
        state[r.id] = 1
        for dep in sorted(deps(r), key=position.__getitem__):
            visit(ids[dep], [*chain, r.id])
        state[r.id] = 2
        done.append(r)

    for r in resources:
        visit(r, [])
    return done
