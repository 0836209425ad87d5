"""Tell fjord its environment in a unit test as a process is told: the variables, then
the Environment the command line would build from them (fjord.environment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fjord import environment


def tell(monkeypatch: pytest.MonkeyPatch, **variables: str | Path) -> environment.Environment:
    """Set ``FJORD_*=value`` and install the environment built from the process's
    variables (both undone after the test)."""
    for key, value in variables.items():
        monkeypatch.setenv(key, str(value))
    env = environment.Environment.from_system(os.environ)
    monkeypatch.setattr(environment, "_current", env)
    return env
