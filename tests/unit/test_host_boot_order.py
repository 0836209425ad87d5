"""Open vSwitch before networking at boot: checked in the units, a drop-in only if missing."""

from __future__ import annotations

import getpass
import pwd
from pathlib import Path

import pytest
from told import tell

from fjord.engine.resource import Context
from fjord.host.boot_order import DROP_IN, BootOrder

DEBIAN_VSWITCHD = "[Unit]\nAfter=ovsdb-server.service\nBefore=network.target networking.service\n"
WITHOUT = "[Unit]\nBefore=network.target\n"


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    me = pwd.getpwnam(getpass.getuser())
    monkeypatch.setattr("fjord.host.files.pwd.getpwnam", lambda name: me)
    return Context(desired=None)  # type: ignore[arg-type]


def units(root: Path, text: str) -> None:
    d = root / "lib/systemd/system"
    d.mkdir(parents=True)
    for u in ("ovsdb-server.service", "ovs-vswitchd.service"):
        (d / u).write_text(text)


def test_debian_units_need_nothing(tmp_path, ctx):
    units(tmp_path, DEBIAN_VSWITCHD)
    assert BootOrder(tmp_path).changes(ctx) == []
    assert not (tmp_path / DROP_IN).exists()


def test_missing_ordering_gets_a_drop_in_once(tmp_path, ctx):
    units(tmp_path, WITHOUT)
    r = BootOrder(tmp_path)
    (change,) = r.changes(ctx)
    assert "before networking.service" in change.detail
    change.run(ctx)
    text = (tmp_path / DROP_IN).read_text()
    assert "After=ovsdb-server.service ovs-vswitchd.service" in text
    assert r.changes(ctx) == []
