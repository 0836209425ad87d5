"""The golden-file check cannot bless what it renders: a missing file fails."""

from __future__ import annotations

import goldens
import pytest


def test_missing_golden_fails_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(goldens, "REGENERATE", False)
    with pytest.raises(AssertionError, match="missing"):
        goldens.check_golden(tmp_path, "x.conf", "a = 1\n")
    assert not (tmp_path / "x.conf").exists()


def test_different_golden_fails_with_a_diff(tmp_path, monkeypatch):
    monkeypatch.setattr(goldens, "REGENERATE", False)
    (tmp_path / "x.conf").write_text("a = 1\n")
    with pytest.raises(AssertionError, match=r"(?s)-a = 1.*\+a = 2"):
        goldens.check_golden(tmp_path, "x.conf", "a = 2\n")
    goldens.check_golden(tmp_path, "x.conf", "a = 1\n")


def test_regenerate_writes_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(goldens, "REGENERATE", True)
    goldens.check_golden(tmp_path, "sub/x.conf", "a = 2\n")
    assert (tmp_path / "sub" / "x.conf").read_text() == "a = 2\n"
