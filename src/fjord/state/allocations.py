"""The addresses fjord handed out: /var/lib/fjord/allocations.json.

A container keeps what it was given: the file remembers it, and the records of the
containers that exist (:mod:`fjord.state.records`) are a second copy that rebuilds a
lost or damaged file. The configuration layer allocates from what :func:`read` returns
(:func:`fjord.config.desired.resolve`); writing the result is a change of the plan
(:class:`fjord.containers.allocations.Allocations`); destroying a container frees its
addresses (:func:`forget`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fjord.state import read_json, state_dir, write_json
from fjord.state.records import recorded_addresses

ALLOCATIONS = "allocations.json"
VERSION = 1
log = logging.getLogger(__name__)


def path() -> Path:
    return state_dir() / ALLOCATIONS


def stored() -> dict[str, Any] | None:
    """What allocations.json holds, as it is (None: absent or corrupt)."""
    data = read_json(path())
    if data is None:
        return None
    containers = data.get("containers", {})
    return dict(containers) if isinstance(containers, dict) else {}


def read() -> dict[str, dict[str, str]]:
    """The remembered allocations: allocations.json, completed from the records of the
    containers that exist (each keeps its own addresses), so that a lost or corrupt file
    is rebuilt from what exists and no existing container's addresses are handed out."""
    known: dict[str, Any] = stored() or {}
    found = recorded_addresses(skip=known)
    if found:
        log.warning("%s lacks %s: taken from their records", path(),
                    ", ".join(sorted(found)))
        known.update(found)
    return known


def write(allocations: Mapping[str, Mapping[str, str]]) -> None:
    """Write the allocations (atomically)."""
    write_json(path(), {"version": VERSION,
                        "containers": {n: dict(v) for n, v in allocations.items()}})


def forget(names: Iterable[str]) -> None:
    """Free the addresses of destroyed containers."""
    data = read()
    for name in names:
        data.pop(name, None)
    write(data)
