"""Processes the lab started, recognised by PID *and* start time (PIDs get reused)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None  # a zombie is gone for our purposes
    return int(fields[19])


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: object) -> Proc | None:
        if isinstance(data, dict) and isinstance(data.get("pid"), int) \
                and isinstance(data.get("start"), int):
            return cls(data["pid"], data["start"])
        return None


def read_pidfile(path: Path) -> int | None:
    """A daemon's PID file (one number), None when absent or garbage."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def daemon_alive(pidfile: Path) -> int | None:
    pid = read_pidfile(pidfile)
    return pid if pid is not None and start_time(pid) is not None else None


def read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def namespace_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
