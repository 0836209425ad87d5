"""/etc/network/interfaces as a systemd boot reads it (`ifup -a`: only `auto` stanzas;
`ifdown -a` at shutdown: what ifupdown recorded up), and ifupdown's state files
(/run/network/ifstate*) as the switchover leaves them.

The golden files are in test_net_resources.py; ifupdown itself (`ifdown -a --no-act`)
reads the state written here when it is installed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fjord.config.desired import load
from fjord.net import interfaces

MAC = "52:54:00:aa:bb:cc"
LAB = "examples/lab.yaml"
PROVIDER = """\
source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback
source-directory /etc/network/more.d
  source /etc/network/indented
# source /etc/network/commented

auto eth0
iface eth0 inet static
\taddress 192.0.2.5/27
"""


def _linux_bridge(tmp_path: Path) -> str:
    cfg = Path(LAB).read_text().replace("kind: ovs", "kind: linux-bridge")
    f = tmp_path / "lb.yaml"
    f.write_text(cfg.replace("datapath: netdev", "datapath: system"))
    return str(f)


def test_source_lines_of_the_current_file_are_kept_in_order() -> None:
    assert interfaces.sources(PROVIDER) == [
        "source /etc/network/interfaces.d/*", "source-directory /etc/network/more.d",
        "source /etc/network/indented"]
    assert interfaces.sources(None) == []
    text = interfaces.render(load(LAB), mac=MAC,
                             keep=interfaces.sources(PROVIDER))
    # after fjord's stanzas, and read back unchanged from fjord's own file
    assert text.index("source /etc/network/interfaces.d/*") > text.index("iface br-int")
    assert interfaces.sources(text) == interfaces.sources(PROVIDER)


def test_bridges_are_auto_and_carry_what_fjord_sets_in_ovsdb() -> None:
    text = interfaces.render(load(LAB), mac=MAC.upper())
    for br in ("br-ex", "br-int"):
        assert f"auto {br}\nallow-ovs {br}\niface {br} inet static\n" in text
    extra = re.findall(r"^    ovs_extra (.*)$", text, re.M)
    assert extra == [
        "set bridge ${IFACE} datapath_type=netdev -- "
        f"set bridge ${{IFACE}} other_config:hwaddr={MAC}",  # lower case, as netlink has it
        "set bridge ${IFACE} datapath_type=netdev"]
    # the uplink is raised by br-ex's hook (ifup --allow=br-ex), never on its own
    assert "auto eth0" not in text and "allow-br-ex eth0\n" in text


def test_without_a_mac_the_bridge_has_none_and_a_bad_one_is_refused() -> None:
    desired = load(LAB)
    assert "hwaddr" not in interfaces.render(desired)
    with pytest.raises(ValueError):
        interfaces.render(desired, mac='00:11:22:33:44:55" ; reboot ; "')


@pytest.mark.parametrize("kind", ["ovs", "linux-bridge"])
def test_raised_at_boot_is_what_ifup_a_raises_with_the_file(kind: str, tmp_path: Path) -> None:
    desired = load(LAB if kind == "ovs" else _linux_bridge(tmp_path))
    text = interfaces.render(desired, mac=MAC)
    autos = re.findall(r"^auto (\S+)$", text, re.M)
    expected = []
    for name in autos[1:]:  # lo aside
        expected.append(name)
        ports = re.search(rf"^iface {name} inet static\n(?:    .*\n)*?    ovs_ports (.*)$",
                          text, re.M)
        expected += ports.group(1).split() if ports else []
    assert interfaces.raised_at_boot(desired) == expected


# --- ifupdown's state ---------------------------------------------------------------------


def _state(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.name.startswith("ifstate")}


def test_record_up_leaves_the_state_a_boot_with_the_new_file_leaves(tmp_path: Path) -> None:
    # what the provider's boot left: lo and the uplink under its old stanza, plus a
    # second interface of the provider's
    (tmp_path / "ifstate").write_text("lo=lo\neth0=eth0\neth1=eth1\n")
    for name in ("lo", "eth0", "eth1"):
        (tmp_path / f"ifstate.{name}").write_text(f"{name}\n")
    saved = interfaces.read_ifstate(["br-ex", "eth0", "br-int"], tmp_path)
    assert saved == {"ifstate": "lo=lo\neth0=eth0\neth1=eth1\n", "ifstate.br-ex": None,
                     "ifstate.eth0": "eth0\n", "ifstate.br-int": None}

    interfaces.record_up(["br-ex", "eth0", "br-int"], state_dir=tmp_path)
    after = {
        "ifstate": "lo=lo\nbr-ex=br-ex\neth0=eth0\nbr-int=br-int\neth1=eth1\n",
        "ifstate.br-ex": "br-ex\n", "ifstate.br-int": "br-int\n",
        "ifstate.eth0": "eth0\n", "ifstate.eth1": "eth1\n", "ifstate.lo": "lo\n"}
    assert _state(tmp_path) == after
    interfaces.record_up(["br-ex", "eth0", "br-int"], state_dir=tmp_path)  # idempotent
    assert _state(tmp_path) == after

    interfaces.restore_ifstate(saved, tmp_path)  # the rollback
    assert _state(tmp_path) == {"ifstate": "lo=lo\neth0=eth0\neth1=eth1\n",
                                "ifstate.eth0": "eth0\n", "ifstate.eth1": "eth1\n",
                                "ifstate.lo": "lo\n"}


def test_a_linux_bridge_uplink_is_recorded_down(tmp_path: Path) -> None:
    (tmp_path / "ifstate").write_text("lo=lo\neth0=eth0\n")
    (tmp_path / "ifstate.eth0").write_text("eth0\n")
    interfaces.record_up(["br-ex", "br-int"], ["eth0"], tmp_path)
    assert (tmp_path / "ifstate").read_text() == "lo=lo\nbr-ex=br-ex\nbr-int=br-int\n"
    assert (tmp_path / "ifstate.eth0").read_text() == "\n"  # as ifdown leaves it


def test_record_up_on_an_empty_state_dir(tmp_path: Path) -> None:
    d = tmp_path / "network"
    interfaces.record_up(["br-ex", "eth0", "br-int"], state_dir=d)
    assert (d / "ifstate").read_text() == "br-ex=br-ex\neth0=eth0\nbr-int=br-int\n"


def _ifdown() -> str | None:
    return shutil.which("ifdown") or next(
        (p for p in ("/usr/sbin/ifdown", "/sbin/ifdown") if Path(p).exists()), None)


@pytest.mark.skipif(_ifdown() is None, reason="ifupdown is not installed")
def test_ifupdown_reads_the_state_as_written(tmp_path: Path) -> None:
    """`ifdown -a` (networking.service's ExecStop), without acting: before the fix only
    the uplink, after it the bridges and the uplink, in the reverse of the boot's order."""
    ifdown = _ifdown()
    assert ifdown is not None
    conf = tmp_path / "interfaces"
    conf.write_text(interfaces.render(load(LAB), mac=MAC))
    state = tmp_path / "run"
    state.mkdir()
    (state / "ifstate").write_text("lo=lo\neth0=eth0\n")
    for name in ("lo", "eth0"):
        (state / f"ifstate.{name}").write_text(f"{name}\n")

    def down() -> list[str]:
        out = subprocess.run([ifdown, "-a", "-n", "-v", "--no-scripts", "--exclude=lo",
                              f"--state-dir={state}", "-i", str(conf)],
                             capture_output=True, text=True, timeout=30, check=True)
        return list(dict.fromkeys(re.findall(r"configuring interface (\S+) ", out.stderr)))

    assert down() == ["eth0=eth0"]  # the provider's record: only the uplink (del-port)
    interfaces.record_up(interfaces.raised_at_boot(load(LAB)),
                         state_dir=state)
    assert down() == ["br-int=br-int", "eth0=eth0", "br-ex=br-ex"]


# --- the switchover moves ifupdown's state with the links -----------------------------------


def test_switchover_records_the_state_and_its_rollback_puts_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unittest import mock

    from fjord.net import switchover

    monkeypatch.setattr(interfaces, "IFSTATE_DIR", tmp_path)
    (tmp_path / "ifstate").write_text("lo=lo\neth0=eth0\n")
    (tmp_path / "ifstate.eth0").write_text("eth0\n")
    before_files = _state(tmp_path)
    t = switchover.Target(uplink="eth0", bridge="br-ex", switch_kind="ovs", netdev=False,
                          addresses=["192.0.2.5/27"], gateway4="192.0.2.1", gateway6=None,
                          ifup=("br-ex", "eth0", "br-int"))
    nl, sw = mock.MagicMock(), mock.MagicMock()
    nl.addresses.return_value = set()
    nl.default_route.return_value = None
    sw.port_bridge.return_value = None
    sw.socket = None
    snap = switchover.snapshot(nl, sw, t)
    assert snap.ifstate == {"ifstate": "lo=lo\neth0=eth0\n", "ifstate.br-ex": None,
                            "ifstate.eth0": "eth0\n", "ifstate.br-int": None}
    switchover.move(nl, sw, t, snap)
    sw.add_port.assert_called_once_with("br-ex", "eth0")
    assert (tmp_path / "ifstate").read_text() == "lo=lo\nbr-ex=br-ex\neth0=eth0\nbr-int=br-int\n"
    # the guard's rollback, from the snapshot as saved (JSON)
    again = switchover.Snapshot(**json.loads(json.dumps(dataclasses.asdict(snap))))
    with mock.patch.object(switchover, "Netlink"), mock.patch.object(switchover, "_switch"):
        switchover.restore(again)
    assert _state(tmp_path) == before_files


def test_files_the_kept_source_lines_include_and_what_they_declare(tmp_path: Path) -> None:
    d = tmp_path / "interfaces.d"
    d.mkdir()
    (d / "50-cloud-init").write_text("auto eth0\niface eth0 inet dhcp\n")
    (d / "60-vlan").write_text("auto eth0.10\niface eth0.10 inet manual\n")
    more = tmp_path / "more.d"
    more.mkdir()
    (more / "ok_name").write_text("allow-hotplug eth1 br-int\n")
    (more / "skipped.conf").write_text("iface br-ex inet manual\n")  # not a run-parts name
    files = interfaces.sourced_files(
        ["source interfaces.d/*", f"source-directory {more}", "source /nonexistent/*"],
        tmp_path)
    assert files == [d / "50-cloud-init", d / "60-vlan", more / "ok_name"]
    names = ["eth0", "br-ex", "br-int"]
    assert [sorted(interfaces.declares(f.read_text(), names)) for f in files] == [
        ["eth0"], [], ["br-int"]]


def test_the_internal_linux_bridge_has_a_fixed_mac_made_from_the_uplinks(tmp_path: Path) -> None:
    """Found by the generated configurations (issue 15 item 2): a Linux bridge without a
    MAC of its own takes its lowest port's; a container started with a lower veth MAC
    changed the containers' gateway's MAC, and the other containers' IPv6 (no unsolicited
    neighbour advertisement) died until their neighbour entries expired."""
    assert interfaces.internal_mac("52:54:00:AA:BB:CC") == "50:54:00:aa:bb:cc"
    assert interfaces.internal_mac("00:00:5e:00:53:3f") == "02:00:5e:00:53:3f"
    text = interfaces.render(load(_linux_bridge(tmp_path)),
                             mac="52:54:00:aa:bb:cc")
    internal = text.split("iface br-int inet static", 1)[1].split("\n\n", 1)[0]
    assert "bridge_hw 50:54:00:aa:bb:cc" in internal
