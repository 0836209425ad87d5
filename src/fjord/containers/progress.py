"""How far an mmdebstrap build is, from its ``--verbose`` output.

mmdebstrap announces its stages with ``I:`` lines; inside the stages apt and dpkg
print one ``Get:``, ``Unpacking`` and ``Setting up`` line per package, and apt says
beforehand how many packages it will install. Each stage owns a share of the bar
(measured on bookworm minbase builds, see docs/containers.md) that fills as its
packages go by, so the bar moves smoothly and never goes back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (marker in the "I:" line, stage name, where the stage starts on a 0..1 bar)
STAGES: tuple[tuple[str, str, float], ...] = (
    ("running apt-get update", "fetching package lists", 0.02),
    ("downloading packages", "downloading essential packages", 0.07),
    ("extracting archives", "extracting essential packages", 0.10),
    ("installing essential packages", "installing essential packages", 0.45),
    ("installing remaining packages", "installing packages", 0.65),
    ("cleaning package lists", "cleaning up", 0.99),
    ("success in", "done", 1.0),
)
_NEW = re.compile(r"^\d+ upgraded, (\d+) newly installed")
# Lines apt and dpkg print once per package, and how many such lines each package gets
# in the stage (in "installing packages" apt downloads, unpacks and configures).
_PER_PACKAGE = ("Get:", "Unpacking ", "Setting up ")


@dataclass
class BuildProgress:
    """Feed it lines; read ``fraction`` (0..1) and ``stage``."""

    stage: str = "starting"
    fraction: float = 0.0
    _index: int = -1
    _total: int = 0
    _seen: int = 0

    def feed(self, line: str) -> bool:
        """Take one line of output; True when the fraction or the stage changed."""
        if line.startswith("I: "):
            for i, (marker, name, _) in enumerate(STAGES):
                if marker in line and i > self._index:
                    self._index, self.stage = i, name
                    self._seen = 0
                    if name == "installing packages":
                        self._total = 0  # apt announces the second batch's count anew
                    self._advance(STAGES[i][2])
                    return True
            return False
        match = _NEW.match(line)
        if match:
            self._total = int(match.group(1))
            return False
        if self._total and line.startswith(_PER_PACKAGE):
            self._seen += 1
            return self._advance(self._within())
        return False

    def _within(self) -> float:
        start = STAGES[self._index][2]
        end = STAGES[self._index + 1][2] if self._index + 1 < len(STAGES) else 1.0
        per_package = {"downloading essential packages": 1,
                       "installing essential packages": 2}.get(self.stage, 3)
        done = min(1.0, self._seen / (self._total * per_package))
        return start + (end - start) * done

    def _advance(self, fraction: float) -> bool:
        if fraction <= self.fraction:
            return False
        self.fraction = fraction
        return True
