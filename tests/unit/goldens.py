"""The one golden-file check of the unit tests.

A golden file is a reviewed rendering (a ruleset, a domain's XML, a sources file). The
check compares; it never blesses what it rendered: a missing golden file fails like a
different one. ``FJORD_REGENERATE=1`` is the only way to (re)write golden files, and the
diff of that run is what gets reviewed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

REGENERATE = os.environ.get("FJORD_REGENERATE") == "1"


def check_golden(directory: Path, name: str, text: str) -> None:
    """Assert that ``text`` is the content of ``directory/name`` (write it only when
    regeneration is asked for)."""
    path = directory / name
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: FJORD_REGENERATE=1 writes it (then review it)"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"{name} (golden)", f"{name} (rendered)"))
        raise AssertionError(f"{name} differs from its golden file; review, then "
                             f"FJORD_REGENERATE=1:\n{diff}")
