"""Shared fixtures of the unit tests, and the Hypothesis profiles.

Hypothesis: the default profile keeps the fuzz tests quick enough for every run (about
300 examples per strategy); FJORD_FUZZ_EXAMPLES=N raises it for a longer hunt, e.g.
`FJORD_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/unit/test_fuzz_config.py`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from hosts import OS_RELEASES
from hypothesis import HealthCheck, settings
from told import tell

FUZZ_EXAMPLES = int(os.environ.get("FJORD_FUZZ_EXAMPLES", "300"))

settings.register_profile(
    "fjord",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # the first example pays for imports and pydantic's schema build
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=FUZZ_EXAMPLES <= 300,  # CI runs are reproducible; long hunts explore
    print_blob=True,
)
settings.load_profile("fjord")


# The host's release in every unit test, whatever the machine runs (Debian 12 or 13, a
# CI's Ubuntu): host.apt.suite's default is read from here, never from /etc/os-release.
OS_RELEASE = OS_RELEASES / "bookworm"


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test installs as fjord's environment (a command's edge, the libvirt hook's
    entry point) is undone after it; the host's os-release is OS_RELEASE (also for the
    environment a test builds from the variables, and a fjord it runs)."""
    from fjord import environment

    monkeypatch.setenv(environment.OS_RELEASE, str(OS_RELEASE))
    monkeypatch.setattr(environment, "_current",
                        replace(environment.current(), os_release=(OS_RELEASE,)))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FJORD_STATE_DIR, so no test reads or writes /var/lib/fjord."""
    path = tmp_path / "state"
    tell(monkeypatch, FJORD_STATE_DIR=str(path))
    return path
