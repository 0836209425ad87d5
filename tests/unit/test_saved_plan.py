"""Saved plans (`plan --out FILE`, `apply FILE`): what they hold, and the refusals
before anything is read: another configuration, fjord or file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fjord import __version__
from fjord.engine.apply import Shown
from fjord.engine.change import Change
from fjord.engine.saved import Saved, config_digest, saved_of
from fjord.errors import FjordError


def _saved(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "fjord.yaml"
    config.write_text("version: 1\n")
    shown = Shown((Change("sysctl x", "update", "x = 1 (is 0)", print).fingerprint,),
                  frozenset({"bridge br-ex"}))
    plan = tmp_path / "plan.json"
    saved_of(shown, config, config_digest(config), ("host",), False).save(plan)
    return config, plan


def test_a_saved_plan_holds_the_fingerprints_and_what_it_was_made_from(tmp_path):
    config, plan = _saved(tmp_path)
    data = json.loads(plan.read_text())
    assert data["format"] == "fjord-plan/1" and data["fjord"] == __version__
    assert data["config"]["path"] == str(config.resolve())
    assert data["changes"] == [{"resource": "sysctl x", "action": "update",
                                "detail": "x = 1 (is 0)", "diff": ""}]
    assert data["only"] == ["host"] and data["unreadable"] == ["bridge br-ex"]
    assert plan.stat().st_mode & 0o777 == 0o600
    saved = Saved.load(plan)
    assert saved.shown.changes[0].detail == "x = 1 (is 0)"
    saved.check(str(config), (), False)  # unchanged: accepted


def test_a_saved_plan_is_refused_when_what_it_was_made_from_changed(tmp_path):
    config, plan = _saved(tmp_path)
    saved = Saved.load(plan)
    config.write_text("version: 1\n# edited\n")
    with pytest.raises(FjordError, match="the configuration changed since the plan was "
                                         "saved: .*fjord.yaml; run fjord plan --out FILE"):
        saved.check(str(config), (), False)
    other = tmp_path / "other.yaml"
    other.write_text("version: 1\n")
    with pytest.raises(FjordError, match="the plan was made from"):
        saved.check(str(other), (), False)
    data = json.loads(plan.read_text())
    data["fjord"] = "0.0.1"
    plan.write_text(json.dumps(data))
    with pytest.raises(FjordError, match="saved by fjord 0.0.1"):
        Saved.load(plan).check(str(config), (), False)
    plan.write_text("{}")
    with pytest.raises(FjordError, match="is not a saved plan"):
        Saved.load(plan)
