"""/proc/PID/mountinfo, parsed. Standard library only: the libvirt hook
(fjord.containers.limits.delegate) reads it while libvirt waits for a container's
start."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Mount:
    point: str
    root: str
    fstype: str
    options: tuple[str, ...]  # the superblock options (for v1: the controllers)


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo: ``ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS…] - TYPE SRC SUPER``."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        out.append(Mount(_unescape(fields[4]), _unescape(fields[3]), rest[0],
                         tuple(rest[2].split(","))))
    return out
