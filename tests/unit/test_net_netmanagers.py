"""Other network managers of the uplink, found in a host root (a temporary directory
laid out as the package or the provider leaves it), and plan's refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fjord.config.desired import load
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context, Drivers
from fjord.errors import FjordError
from fjord.net import netmanagers
from fjord.net.netmanagers import OtherNetworkManagers, detect

MAC = "96:00:01:02:03:04"
BRIDGES = ("br-ex", "br-int")


def put(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def enable(root: Path, unit: str, target: str = "multi-user.target") -> None:
    link = root / "etc/systemd/system" / f"{target}.wants" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"/lib/systemd/system/{unit}")


def managers(root: Path, uplink: str = "eth0") -> list[str]:
    return [f.manager.split(" ")[0] for f in detect(root, uplink, MAC, BRIDGES)]


def test_a_plain_debian_root_has_none(tmp_path: Path) -> None:
    put(tmp_path, "etc/network/interfaces", "auto eth0\niface eth0 inet dhcp\n")
    enable(tmp_path, "networking.service")
    assert detect(tmp_path, "eth0", MAC, BRIDGES) == []


# --- cloud-init ---------------------------------------------------------------------------


HETZNER_50 = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"


def test_cloud_init_with_network_config_is_found(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "datasource_list: [Hetzner, None]\n")
    put(tmp_path, "etc/network/interfaces.d/50-cloud-init", HETZNER_50)
    (found,) = detect(tmp_path, "eth0", MAC, BRIDGES)
    assert found.manager.startswith("cloud-init")
    assert "/etc/network/interfaces.d/50-cloud-init" in found.evidence
    assert "network: {config: disabled}" in found.todo
    assert "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg" in found.todo
    assert "delete /etc/network/interfaces.d/50-cloud-init" in found.todo


def test_cloud_init_with_network_config_disabled_is_not(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "network:\n  config: v1\n")
    put(tmp_path, netmanagers.CLOUD_DISABLE, "network: {config: disabled}\n")
    assert managers(tmp_path) == []
    # a later file turns it back on: the last `network` wins
    put(tmp_path, "etc/cloud/cloud.cfg.d/zz-on.cfg", "network:\n  config: {version: 2}\n")
    assert managers(tmp_path) == ["cloud-init"]


def test_cloud_init_disabled_entirely_is_not(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "{}\n")
    put(tmp_path, "etc/cloud/cloud-init.disabled")
    assert managers(tmp_path) == []


def test_cloud_init_with_a_broken_cfg_still_counts(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "{}\n")
    put(tmp_path, "etc/cloud/cloud.cfg.d/10-x.cfg", "network: [unclosed\n")
    assert managers(tmp_path) == ["cloud-init"]


# --- netplan ------------------------------------------------------------------------------


NETPLAN_CLOUD = """\
network:
  version: 2
  ethernets:
    eth0:
      match: {macaddress: "96:00:01:02:03:04"}
      set-name: eth0
      dhcp4: true
"""


@pytest.mark.parametrize("text", [
    NETPLAN_CLOUD,
    "network:\n  ethernets:\n    eth0: {dhcp4: true}\n",
    "network:\n  ethernets:\n    uplink:\n      match: {name: 'en*'}\n",
    "network:\n  ethernets:\n    any:\n      match: {macaddress: '96:00:01:02:03:04'}\n",
])
def test_netplan_file_for_the_uplink_is_found(tmp_path: Path, text: str) -> None:
    put(tmp_path, "usr/sbin/netplan")
    put(tmp_path, "etc/netplan/50-cloud-init.yaml", text)
    uplink = "enp1s0" if "en*" in text else "eth0"
    found = detect(tmp_path, uplink, MAC, BRIDGES)
    assert [f.manager for f in found] == ["netplan"]
    assert found[0].evidence == "/etc/netplan/50-cloud-init.yaml"


def test_netplan_for_another_nic_or_without_netplan_is_not(tmp_path: Path) -> None:
    put(tmp_path, "etc/netplan/01.yaml", NETPLAN_CLOUD)
    assert managers(tmp_path) == []  # netplan not installed: nothing reads the file
    put(tmp_path, "lib/systemd/system-generators/netplan")
    put(tmp_path, "etc/netplan/01.yaml", "network:\n  ethernets:\n    eth1: {dhcp4: true}\n")
    assert managers(tmp_path) == []


# --- systemd-networkd ---------------------------------------------------------------------


@pytest.mark.parametrize("match", [
    "[Match]\nName=eth0\n", "[Match]\nName=en* eth*\n", f"[Match]\nMACAddress={MAC}\n",
    "[Network]\nDHCP=yes\n",  # no [Match]: every link
])
def test_networkd_enabled_with_a_matching_network_file_is_found(tmp_path: Path,
                                                                match: str) -> None:
    enable(tmp_path, "systemd-networkd.service")
    put(tmp_path, "etc/systemd/network/10-uplink.network", match + "[Network]\nDHCP=yes\n")
    found = detect(tmp_path, "eth0", MAC, BRIDGES)
    assert [f.manager for f in found] == ["systemd-networkd"]
    assert "/etc/systemd/network/10-uplink.network" in found[0].todo


def test_networkd_not_enabled_or_not_matching_is_not(tmp_path: Path) -> None:
    put(tmp_path, "etc/systemd/network/10-uplink.network", "[Match]\nName=eth0\n")
    assert managers(tmp_path) == []  # not enabled
    enable(tmp_path, "systemd-networkd.service")
    put(tmp_path, "etc/systemd/network/10-uplink.network", "[Match]\nName=!eth0\n")
    put(tmp_path, "usr/lib/systemd/network/80-container-host0.network",
        "[Match]\nVirtualization=container\nName=host0\n")
    assert managers(tmp_path) == []
    # masked in /etc: the packaged file no longer counts
    put(tmp_path, "usr/lib/systemd/network/20-all.network", "[Match]\nName=*\n")
    assert managers(tmp_path) == ["systemd-networkd"]
    (tmp_path / "etc/systemd/network/20-all.network").symlink_to("/dev/null")
    assert managers(tmp_path) == []


def test_networkd_masked_is_not(tmp_path: Path) -> None:
    enable(tmp_path, "systemd-networkd.service")
    (tmp_path / "etc/systemd/system/systemd-networkd.service").symlink_to("/dev/null")
    put(tmp_path, "etc/systemd/network/10-uplink.network", "[Match]\nName=eth0\n")
    assert managers(tmp_path) == []


# --- NetworkManager -----------------------------------------------------------------------


DEBIAN_NM = "[main]\nplugins=ifupdown,keyfile\n\n[ifupdown]\nmanaged=false\n"


def test_network_manager_with_debians_defaults_leaves_ifupdowns_interfaces(
        tmp_path: Path) -> None:
    enable(tmp_path, "NetworkManager.service")
    put(tmp_path, "etc/NetworkManager/NetworkManager.conf", DEBIAN_NM)
    assert managers(tmp_path) == []


def test_network_manager_managing_every_device_is_found(tmp_path: Path) -> None:
    enable(tmp_path, "NetworkManager.service")
    put(tmp_path, "etc/NetworkManager/NetworkManager.conf", "[main]\nplugins=keyfile\n")
    (found,) = detect(tmp_path, "eth0", MAC, BRIDGES)
    assert found.manager == "NetworkManager"
    assert "unmanaged-devices=interface-name:eth0" in found.todo
    # declared unmanaged: left alone
    put(tmp_path, "etc/NetworkManager/conf.d/99-fjord.conf",
        "[keyfile]\nunmanaged-devices=interface-name:eth0\n")
    assert managers(tmp_path) == []


def test_network_manager_connection_for_the_uplink_is_found(tmp_path: Path) -> None:
    enable(tmp_path, "NetworkManager.service")
    put(tmp_path, "etc/NetworkManager/NetworkManager.conf", DEBIAN_NM)
    put(tmp_path, "etc/NetworkManager/system-connections/Wired.nmconnection",
        "[connection]\nid=Wired\ntype=ethernet\ninterface-name=eth0\n")
    found = detect(tmp_path, "eth0", MAC, BRIDGES)
    assert [f.manager for f in found] == ["NetworkManager"]
    assert "Wired.nmconnection" in found[0].evidence
    os.unlink(tmp_path / "etc/systemd/system/multi-user.target.wants/NetworkManager.service")
    assert managers(tmp_path) == []  # installed, not enabled


def test_several_are_all_named(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "{}\n")
    put(tmp_path, "usr/sbin/netplan")
    put(tmp_path, "etc/netplan/50-cloud-init.yaml", NETPLAN_CLOUD)
    assert managers(tmp_path) == ["cloud-init", "netplan"]


# --- a DHCP client -------------------------------------------------------------------------


def test_a_running_dhclient_for_the_uplink_is_found(tmp_path: Path) -> None:
    put(tmp_path, "run/dhclient.eth0.pid", "4242\n")
    assert managers(tmp_path) == []  # no such process: a stale PID file
    put(tmp_path, "proc/4242/comm", "sshd\n")
    assert managers(tmp_path) == []  # the PID was reused
    put(tmp_path, "proc/4242/comm", "dhclient\n")
    (found,) = detect(tmp_path, "eth0", MAC, BRIDGES)
    assert found.manager == "a DHCP client (dhclient, PID 4242)"
    assert "kill 4242" in found.todo and "static" in found.todo
    assert managers(tmp_path, uplink="eth1") == []


# --- plan refuses ---------------------------------------------------------------------------


class NoNetlink:
    def link(self, name: str) -> None:
        return None


def test_plan_refuses_with_what_to_do(tmp_path: Path) -> None:
    put(tmp_path, "etc/cloud/cloud.cfg", "{}\n")
    put(tmp_path, "etc/network/interfaces.d/50-cloud-init", HETZNER_50)
    desired = load("examples/hetzner-cloud.yaml")
    ctx = Context(desired, drivers=Drivers({"netlink": NoNetlink()}))
    resource = OtherNetworkManagers("eth0", BRIDGES, root=tmp_path)
    with pytest.raises(FjordError) as raised:
        make_plan([resource], ctx)
    assert "another network manager configures eth0" in raised.value.message
    assert "cloud-init" in raised.value.message
    assert "network: {config: disabled}" in (raised.value.hint or "")
    assert "nothing was changed" in (raised.value.hint or "")
    put(tmp_path, netmanagers.CLOUD_DISABLE, "network: {config: disabled}\n")
    (tmp_path / "etc/network/interfaces.d/50-cloud-init").unlink()
    plan = make_plan([resource], ctx)
    assert plan.empty and plan.unchanged[0].resource == "network managers eth0"
