"""Where the containers' records are, and what of them the desired state needs: the
addresses each container was given (a second copy of allocations.json, which rebuilds a
lost one) and the suite each was built from. Read by :mod:`fjord.state.allocations` and
:mod:`fjord.state.known` (the configuration layer gets them as arguments), written by
:mod:`fjord.containers.rootfs`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from fjord.state import state_dir

RECORD = "container.json"


def containers_dir() -> Path:
    return state_dir() / "containers"


def recorded_addresses(skip: Iterable[str] = (), base: Path | None = None
                       ) -> dict[str, dict[str, str]]:
    """The addresses the records of existing containers hold (those not in ``skip``):
    what rebuilds a lost or damaged allocations.json."""
    root = base if base is not None else containers_dir()
    skip = set(skip)
    out: dict[str, dict[str, str]] = {}
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return out
    for name in entries:
        if name in skip:
            continue
        try:
            data = json.loads((root / name / RECORD).read_bytes())
            addresses = data.get("addresses") if isinstance(data, dict) else None
        except (OSError, ValueError):
            continue
        if isinstance(addresses, dict):
            out[name] = {k: v for k, v in addresses.items() if isinstance(v, str)}
    return out


def recorded_suites(base: Path | None = None) -> dict[str, str]:
    """The suite each existing container was built from, as its record's image key says
    (``SUITE-ARCH-DIGEST``). A record that cannot tell (unreadable, corrupt, rebuilt with
    its image unknown) is left out: that container takes the file's suite."""
    root = base if base is not None else containers_dir()
    out: dict[str, str] = {}
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return out
    for name in entries:
        try:
            data = json.loads((root / name / RECORD).read_bytes())
            image = data.get("image") if isinstance(data, dict) else None
        except (OSError, ValueError):
            continue
        if isinstance(image, str) and image.count("-") >= 2:
            out[name] = image.partition("-")[0]
    return out
