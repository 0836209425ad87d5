"""Dependency order of resources: a stable topological sort.

A resource's ``after`` names what must converge first, typed: a kind (every resource of
it), as its Resource class; or one resource, as the object itself or as :class:`Ref`
(its class and name, where the object is made elsewhere). A string is refused (an id
or a kind's name used to be accepted, and a typo dropped silently, the order with it).
A reference must resolve: to a resource in the list, to a kind of the registry
(``fjord.resources.registry()`` imports every kind's class, each adds its kind to
``KINDS`` here; none of it in the list: none declared, or its layer left
out with --only), or to a resource of such a kind (the catalogue checks, with every
layer, that it is there). Anything else is an error."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from fjord.errors import FjordError

# Every kind of the Resource classes of fjord defined so far (fjord.resources.registry()
# imports them all; engine.resource.Resource adds each subclass's kind).
KINDS: set[str] = set()


@runtime_checkable
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


# What ``after`` holds: a resource, one resource by kind and name, or a kind.
Reference: TypeAlias = Ordered | Ref | type[Ordered]


def resolve(r: Ordered, ref: object) -> tuple[str, str | None]:
    """The kind a reference names, and the id of the one resource it names (None for
    every resource of the kind). Raises TypeError for what is not a reference."""
    if isinstance(ref, Ref):
        return str(ref.kind.kind), str(ref)
    kind = getattr(ref, "kind", None)
    if isinstance(ref, type) and isinstance(kind, str):
        return kind, None
    if isinstance(ref, Ordered) and not isinstance(ref, type):
        return ref.kind, ref.id
    raise TypeError(f"{r.id} comes after {ref!r}, which is not a reference: name a kind by "
                    "its class (Bridge), one resource by itself or by Ref(Class, name)")


def registered_kinds() -> Collection[str]:
    return KINDS


def dependency_map(resources: Sequence[Resource], kinds: Collection[str] | None = None, *,
                   complete: bool = False) -> dict[str, list[str]]:
    """Each resource's id -> the ids it comes after. Raises on an unknown reference
    (FjordError) and on one that is no reference at all, a string say (TypeError).

    ``complete``: ``resources`` are every layer's, so a reference to one resource of a
    registered kind must find it (otherwise, --only may have left it out)."""
    registered = set(registered_kinds() if kinds is None else kinds)
    ids = {r.id for r in resources}
    by_kind: dict[str, list[str]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r.id)
    out: dict[str, list[str]] = {}
    for r in resources:
        deps: list[str] = []
        for ref in r.after:
            kind, one = resolve(r, ref)
            if one is None:
                if kind not in registered and kind not in by_kind:
                    raise FjordError(f"internal: {r.id} comes after the kind {kind!r}, which "
                                     "is not a kind fjord knows")
                deps.extend(x for x in by_kind.get(kind, ()) if x != r.id)
            elif one in ids:
                deps.append(one)
            elif complete or kind not in registered:
                # a resource of a registered kind may be left out with its layer by --only
                raise FjordError(f"internal: {r.id} comes after {one!r}, which is not a "
                                 f"resource fjord knows (there is no such {kind})")
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
