"""Dependency order of resources: a stable topological sort.

A resource's ``after`` names what must converge first: a kind (every resource of it:
a Resource class, or its kind's name), or one resource (:class:`Ref`, or its id). A
reference must resolve: to a resource in the list, to a kind of the registry
(``fjord.resources.registry()`` imports every kind's class, each adds its kind to
``KINDS`` here; none of it in the list: none declared, or its layer left
out with --only), or to a resource of such a kind (the catalogue checks, with every
layer, that it is there). Anything else is an error (a typo used to be dropped
silently, and the order with it)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fjord.errors import FjordError

# Every kind of the Resource classes of fjord defined so far (fjord.resources.registry()
# imports them all; engine.resource.Resource adds each subclass's kind).
KINDS: set[str] = set()


class Ordered(Protocol):
    """What the order needs of a resource (fjord.engine.resource.Resource has it)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def after(self) -> Sequence[Any]: ...


Resource = TypeVar("Resource", bound=Ordered)


@dataclass(frozen=True)
class Ref:
    """One resource of a kind, by name: ``Ref(Service, "libvirtd")``."""

    kind: type[Ordered]  # a Resource class
    name: str

    def __str__(self) -> str:
        return f"{self.kind.kind} {self.name}"


def ref_text(ref: str | Ref | type[Ordered]) -> str:
    """A reference as an id or a kind's name."""
    if isinstance(ref, type):
        return str(ref.kind)
    return str(ref)


def registered_kinds() -> Collection[str]:
    return KINDS


def dependency_map(resources: Sequence[Resource], kinds: Collection[str] | None = None, *,
                   complete: bool = False) -> dict[str, list[str]]:
    """Each resource's id -> the ids it comes after. Raises on an unknown reference.

    ``complete``: ``resources`` are every layer's, so a reference to one resource of a
    registered kind must find it (otherwise, --only may have left it out)."""
    registered = set(registered_kinds() if kinds is None else kinds)
    known = set(registered)
    ids = {r.id for r in resources}
    by_kind: dict[str, list[str]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r.id)
    known |= by_kind.keys()
    out: dict[str, list[str]] = {}
    for r in resources:
        deps: list[str] = []
        for ref in r.after:
            text = ref_text(ref)
            if text in ids and not isinstance(ref, type):
                deps.append(text)
            elif text in known and not isinstance(ref, Ref):
                deps.extend(x for x in by_kind.get(text, ()) if x != r.id)
            else:
                kind = next((k for k in known if text.startswith(k + " ")), None)
                if kind is None or complete or (kind in by_kind and kind not in registered):
                    what = "a resource" if kind is not None else "a resource or a kind"
                    raise FjordError(f"internal: {r.id} comes after {text!r}, which is not "
                                     f"{what} fjord knows"
                                     + (f" (there is no such {kind})" if kind else ""))
                # a resource of a registered kind, left out with its layer by --only
        out[r.id] = deps
    return out


def dependents(resources: Sequence[Resource], of: str,
               deps: dict[str, list[str]] | None = None) -> set[str]:
    """The ids of the resources that come after ``of``, directly or through others."""
    deps = dependency_map(resources) if deps is None else deps
    found: set[str] = set()
    todo = [of]
    while todo:
        current = todo.pop()
        for r in resources:
            if r.id not in found and current in deps[r.id]:
                found.add(r.id)
                todo.append(r.id)
    return found


def order(resources: Sequence[Resource],
          kinds: Collection[str] | None = None) -> list[Resource]:
    """Resources in dependency order; the declared order where no dependency decides."""
    ids = {r.id: r for r in resources}
    if len(ids) != len(resources):
        dup = sorted({r.id for r in resources if [x.id for x in resources].count(r.id) > 1})
        raise FjordError(f"internal: resources declared twice: {', '.join(dup)}")
    position = {r.id: i for i, r in enumerate(resources)}
    deps = dependency_map(resources, kinds)

    done: list[Resource] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(r: Resource, chain: list[str]) -> None:
        if state.get(r.id) == 2:
            return
        if state.get(r.id) == 1:
            raise FjordError("internal: dependency cycle: " + " -> ".join([*chain, r.id]))
        state[r.id] = 1
        for dep in sorted(deps[r.id], key=position.__getitem__):
            visit(ids[dep], [*chain, r.id])
        state[r.id] = 2
        done.append(r)

    for r in resources:
        visit(r, [])
    return done
