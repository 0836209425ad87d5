"""File and sysctl resources against a temporary directory."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest
from told import tell

from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host import sysctl
from fjord.host.files import File


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    return Context(desired=None)  # type: ignore[arg-type]


def test_file_create_update_mode_and_backup(tmp_path: Path, ctx):
    owner = getpass.getuser()
    target = tmp_path / "etc" / "x.conf"
    f = File(target, "one\n", mode=0o600, owner=owner)
    (c,) = f.changes(ctx)
    assert c.action == "create" and "+one" in (c.diff or "")
    c.run(ctx)
    assert target.read_text() == "one\n" and (target.stat().st_mode & 0o777) == 0o600
    assert f.changes(ctx) == []
    f2 = File(target, "two\n", mode=0o600, owner=owner)
    (c,) = f2.changes(ctx)
    assert c.action == "update" and "-one" in (c.diff or "") and "+two" in (c.diff or "")
    c.run(ctx)
    backups = list((tmp_path / "state" / "backups").iterdir())
    assert len(backups) == 1 and backups[0].read_text() == "one\n"
    os.chmod(target, 0o644)
    (c,) = f2.changes(ctx)
    assert "mode 0600" in c.detail
    c.run(ctx)
    assert f2.changes(ctx) == []


def test_file_absent(tmp_path, ctx):
    target = tmp_path / "gone"
    target.write_text("x")
    f = File(target, None, ensure="absent")
    (c,) = f.changes(ctx)
    assert c.action == "delete"
    c.run(ctx)
    assert not target.exists() and f.changes(ctx) == []


def test_sysctl_rendering_follows_ipv6_mode():
    from fjord.config.desired import load

    desired = load("examples/lab.yaml")
    keys = [k for k, _, _ in sysctl.wanted(desired)]
    assert keys == ["net.ipv4.ip_forward", "net.ipv4.conf.all.arp_ignore",
                    "net.ipv6.conf.all.forwarding",
                    "net.ipv6.conf.all.proxy_ndp"]
    text = sysctl.render(sysctl.wanted(desired))
    assert "net.ipv4.ip_forward = 1" in text and text.startswith("# Managed by fjord")


def test_sysctl_reads_proc(monkeypatch, tmp_path, ctx):
    monkeypatch.setattr(sysctl, "PROC", tmp_path)
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("0\n")
    r = sysctl.Sysctl("net.ipv4.ip_forward", "1", "why")
    (c,) = r.changes(ctx)
    c.run(ctx)
    assert r.changes(ctx) == []


def test_linux_bridges_keep_bridged_frames_out_of_nftables(tmp_path, monkeypatch, ctx):
    """Found by the generated configurations (issue 15 item 2): with br_netfilter loaded
    (Docker loads it), frames a Linux bridge forwards went through the firewall's forward
    chain (policy drop): bridged IPv6 could not even resolve its gateway. fjord turns that
    off where the module is loaded, persisted with `-` for where it is not (yet)."""
    from test_host_packages import _desired_with_switch

    bridge = _desired_with_switch(tmp_path, "linux-bridge")
    settings = sysctl.wanted(bridge)
    assert ("net.bridge.bridge-nf-call-ip6tables", "0") in [(k, v) for k, v, _ in settings]
    assert not any(k.startswith("net.bridge.") for k, _, _ in
                   sysctl.wanted(_desired_with_switch(tmp_path, "ovs")))
    assert "\n-net.bridge.bridge-nf-call-ip6tables = 0\n" in sysctl.render(settings)
    monkeypatch.setattr(sysctl, "PROC", tmp_path / "proc")
    key = sysctl.Sysctl("net.bridge.bridge-nf-call-ip6tables", "0", "why")
    assert key.changes(ctx) == []          # module not loaded: nothing to set
    knob = tmp_path / "proc" / "net" / "bridge" / "bridge-nf-call-ip6tables"
    knob.parent.mkdir(parents=True)
    knob.write_text("1\n")
    (c,) = key.changes(ctx)
    c.run(ctx)
    assert knob.read_text() == "0\n" and key.changes(ctx) == []


def test_host_sysctl_is_set_persisted_and_must_exist(monkeypatch, tmp_path, ctx):
    """The file's host.sysctl: after fjord's own keys, in the same persisted file; a
    key the kernel does not have stops the plan with its name; values of several
    numbers compare as sysctl reads them back (tabs)."""
    from dataclasses import replace

    from fjord.config.desired import load

    desired = load("examples/lab.yaml")
    host = desired.config.host.model_copy(
        update={"sysctl": {"net.core.somaxconn": "4096",
                           "net.ipv4.tcp_rmem": "4096 131072 6291456"}})
    desired = replace(desired, config=desired.config.model_copy(update={"host": host}))
    settings = sysctl.wanted(desired)
    assert [k for k, _, _ in settings][-2:] == ["net.core.somaxconn", "net.ipv4.tcp_rmem"]
    text = sysctl.render(settings)
    assert "\n# declared in host.sysctl\nnet.core.somaxconn = 4096\n" in text
    assert text.index("net.ipv4.ip_forward") < text.index("net.core.somaxconn")
    res = {r.id: r for r in sysctl.resources(desired)}
    monkeypatch.setattr(sysctl, "PROC", tmp_path)
    (tmp_path / "net" / "core").mkdir(parents=True)
    (tmp_path / "net" / "core" / "somaxconn").write_text("128\n")
    (c,) = res["sysctl net.core.somaxconn"].changes(ctx)
    assert c.detail == "net.core.somaxconn = 4096 (declared in host.sysctl; is 128)"
    c.run(ctx)
    assert res["sysctl net.core.somaxconn"].changes(ctx) == []
    with pytest.raises(FjordError, match="host.sysctl: net.ipv4.tcp_rmem does not exist"):
        res["sysctl net.ipv4.tcp_rmem"].changes(ctx)
    (tmp_path / "net" / "ipv4").mkdir()
    (tmp_path / "net" / "ipv4" / "tcp_rmem").write_text("4096\t131072\t6291456\n")
    assert res["sysctl net.ipv4.tcp_rmem"].changes(ctx) == []
