"""fjord's own state under /var/lib/fjord: small JSON files, written atomically.

The state layer: this module (the directory, atomic writes, JSON), the containers'
records (:mod:`fjord.state.records`), the addresses handed out
(:mod:`fjord.state.allocations`) and what of them the desired state is resolved with
(:mod:`fjord.state.known`). The configuration layer reads none of it: it is given it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from fjord import environment

log = logging.getLogger("fjord.state")

DEFAULT_STATE_DIR = str(environment.DEFAULT_STATE_DIR)


def state_dir() -> Path:
    """fjord's state directory in the environment the command line installed."""
    return environment.current().state_dir


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dirfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError:
        pass


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when absent or corrupt (the next write sets it aside)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except ValueError as exc:
        log.warning("%s is corrupt (%s); rebuilding it from what exists", path, exc)
        return None


def write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Write atomically; a corrupt previous file is kept as NAME.corrupt for inspection."""
    try:
        json.loads(path.read_bytes())
    except FileNotFoundError:
        pass
    except ValueError:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)
