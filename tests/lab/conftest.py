"""Fixtures for tests on a simulated server (fjord.lab).

    def test_something(lab):                       # a fresh lab, provider bridged
        assert lab.exec(["ping", "-c1", lab.far_ipv4]).ok

    @pytest.mark.parametrize("lab", ["routed"], indirect=True)
    def test_routed(lab): ...                      # choose the provider

    def test_two(make_lab):                        # several labs, any provider/config
        a, b = make_lab(), make_lab(provider="onlink")

Every lab gets a unique name and is torn down after the test, failed or not (it is
registered before it is created, so a half-created one goes too); it is owned by the
test process, so that the next run removes it if this one gets killed. Lab tests need
root: without it they are skipped locally and fail in CI (CI=true), where skipping
them would hide that they never ran.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fjord.lab import Lab, orphans

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def lab_root() -> None:
    """Lab tests need root; CI must run them. Labs left by a killed earlier run (their
    owner process is gone) are removed first."""
    if os.geteuid() != 0:
        if _in_ci():
            pytest.fail("lab tests need root and CI must run them: run the suite as root")
        pytest.skip("lab tests need root (sudo .venv/bin/pytest tests/lab -m lab)")
    for name in orphans():
        Lab(name).down()


def unique_name() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def lab_name(lab_root: None) -> str:
    """A fresh lab name (the test creates and removes the lab itself)."""
    return unique_name()


@pytest.fixture
def lab_config() -> str:
    """The configuration labs are made from by default (examples/lab.yaml)."""
    return EXAMPLE


@pytest.fixture
def make_lab(lab_root: None) -> Iterator[Callable[..., Lab]]:
    """A factory: ``make_lab(provider="routed", config=PATH, name=None)`` -> a Lab that is up."""
    made: list[Lab] = []

    def factory(provider: str = "bridged", config: str = EXAMPLE,
                name: str | None = None) -> Lab:
        lab = Lab(name or unique_name())
        made.append(lab)
        lab.up(config=config, provider=provider, owner=os.getpid())
        return lab

    yield factory
    failures = []
    for lab in reversed(made):
        try:
            lab.down()
        except Exception as exc:  # tear the others down anyway, then report
            failures.append(f"{lab.name}: {exc}")
    if failures:
        pytest.fail("lab down failed: " + "; ".join(failures))


@pytest.fixture
def lab(request: pytest.FixtureRequest, make_lab: Callable[..., Lab]) -> Lab:
    """A fresh lab; its provider comes from indirect parametrization (default bridged)."""
    return make_lab(provider=getattr(request, "param", "bridged"))
