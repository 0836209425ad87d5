"""The lab's boot: which sysctl keys it replays, in which order, what is "enabled", and
the commands it takes from the installed unit files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fjord.errors import FjordError
from fjord.lab.boot import (
    Command,
    ServerRoot,
    commands,
    net_settings,
    parse_sysctl,
    parse_unit,
    sysctl_files,
)


def test_parse_sysctl_file() -> None:
    text = ("# comment\n; other comment\n\nnet.ipv4.ip_forward = 1\n"
            "-net.ipv6.conf.all.forwarding=1\nnet/ipv6/conf/all/proxy_ndp = 1\n"
            "kernel.pid_max = 4194304\nnot a setting\n")
    assert parse_sysctl(text) == [
        ("net.ipv4.ip_forward", "1", False),
        ("net.ipv6.conf.all.forwarding", "1", True),
        ("net.ipv6.conf.all.proxy_ndp", "1", False),
        ("kernel.pid_max", "4194304", False),
    ]


def _root(tmp_path: Path) -> ServerRoot:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "usr/lib/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.conf").write_text("net.core.somaxconn = 1024\n")
    (tmp_path / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    (tmp_path / "etc/sysctl.d/60-fjord.conf").write_text(
        "net.ipv4.ip_forward = 1\nkernel.dmesg_restrict = 1\n")
    (tmp_path / "usr/lib/sysctl.d/60-fjord.conf").write_text("net.ipv4.ip_forward = 0\n")
    (tmp_path / "usr/lib/sysctl.d/50-pid-max.conf").write_text("kernel.pid_max = 4194304\n")
    (tmp_path / "usr/lib/sysctl.d/50-default.conf").write_text(
        "net.ipv4.conf.*.rp_filter = 2\n")
    return ServerRoot(tmp_path)


def test_sysctl_files_merge_like_systemd_sysctl(tmp_path: Path) -> None:
    root = _root(tmp_path)
    names = [str(f.relative_to(tmp_path)) for f in sysctl_files(root)]
    # by file name; /etc wins over /usr/lib for the same name
    assert names == ["usr/lib/sysctl.d/50-default.conf", "usr/lib/sysctl.d/50-pid-max.conf",
                     "etc/sysctl.d/60-fjord.conf", "etc/sysctl.d/99-sysctl.conf"]


def test_only_net_keys_are_replayed(tmp_path: Path) -> None:
    assert net_settings(_root(tmp_path)) == [
        ("net.ipv4.conf.*.rp_filter", "2", False),
        ("net.ipv4.ip_forward", "1", False),
        ("net.core.somaxconn", "1024", False),  # through the relative symbolic link
    ]


def test_enabled_units_are_read_from_etc_systemd_system(tmp_path: Path) -> None:
    root = ServerRoot(tmp_path)
    assert not root.enabled("nftables.service")
    wants = tmp_path / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    (wants / "nftables.service").symlink_to("/lib/systemd/system/nftables.service")
    assert root.enabled("nftables.service")  # a dangling link is still "enabled"
    assert not root.enabled("libvirtd.service", "libvirtd.socket")


def test_absolute_links_resolve_inside_the_server(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/real.conf").write_text("x")
    (tmp_path / "etc/link.conf").symlink_to("/etc/real.conf")
    assert ServerRoot(tmp_path).path("/etc/link.conf") == tmp_path / "etc/real.conf"


# --- unit files: what the lab's shutdown and boot run ------------------------------------

NETWORKING = """\
[Unit]
Description=Raise network interfaces
ExecStart=/bin/false

[Service]
Type=oneshot
EnvironmentFile=-/etc/default/networking
ExecStart=/sbin/ifup -a --read-environment
ExecStart=-/bin/sh -c 'if [ -f /run/network/restart-hotplug ]; then /sbin/ifup -a \\
 --read-environment --allow=hotplug; fi'
ExecStop=/sbin/ifdown -a --read-environment --exclude=lo
ExecStopPost=/usr/bin/touch /run/network/restart-hotplug
RemainAfterExit=true

[Install]
WantedBy=multi-user.target
"""
OVS_SWITCH = "[Service]\nType=oneshot\nExecStart=/bin/true\nExecStop=/bin/true\n"


def _argvs(cmds: list[Command]) -> list[tuple[tuple[str, ...], bool]]:
    return [(c.argv, c.may_fail) for c in cmds]


def test_commands_of_debians_networking_service() -> None:
    settings = parse_unit(NETWORKING)
    assert _argvs(commands(settings, "ExecStart")) == [
        (("/sbin/ifup", "-a", "--read-environment"), False),
        (("/bin/sh", "-c", "if [ -f /run/network/restart-hotplug ]; then /sbin/ifup -a   "
          "--read-environment --allow=hotplug; fi"), True)]
    assert _argvs(commands(settings, "ExecStop")) == [
        (("/sbin/ifdown", "-a", "--read-environment", "--exclude=lo"), False)]
    assert settings["EnvironmentFile"] == ["-/etc/default/networking"]
    # /bin/true is nothing to run: Debian's openvswitch-switch.service
    assert commands(parse_unit(OVS_SWITCH), "ExecStart") == []


def test_drop_ins_override_and_an_empty_assignment_resets() -> None:
    drop_in = "[Service]\nExecStart=\nExecStart=/sbin/ifup -a\nExecStart=+/bin/echo done\n"
    assert _argvs(commands(parse_unit(NETWORKING, drop_in), "ExecStart")) == [
        (("/sbin/ifup", "-a"), False), (("/bin/echo", "done"), False)]


def test_variables_are_expanded_as_systemd_does() -> None:
    settings = parse_unit('[Service]\nExecStart=/usr/sbin/libvirtd $ARGS "${ONE}x" $$HOME\n')
    (cmd,) = commands(settings, "ExecStart", {"ARGS": "--timeout 120", "ONE": "a b"})
    assert cmd.argv == ("/usr/sbin/libvirtd", "--timeout", "120", "a bx", "$HOME")
    assert str(cmd) == "/usr/sbin/libvirtd --timeout 120 'a bx' '$HOME'"


def _units(tmp_path: Path) -> ServerRoot:
    lib = tmp_path / "lib/systemd/system"
    lib.mkdir(parents=True)
    (lib / "networking.service").write_text(NETWORKING)
    etc = tmp_path / "etc/systemd/system/networking.service.d"
    etc.mkdir(parents=True)
    (etc / "10-verbose.conf").write_text('[Service]\nEnvironment="VERBOSE=yes" A=1\n')
    (tmp_path / "etc/default").mkdir()
    (tmp_path / "etc/default/networking").write_text(
        '# comment\nCONFIGURE_INTERFACES=yes\nEXCLUDE_INTERFACES="eth9 eth8"\n')
    return ServerRoot(tmp_path)


def test_a_unit_is_read_from_the_servers_root_with_its_environment(tmp_path: Path) -> None:
    root = _units(tmp_path)
    settings = root.unit("networking.service")
    assert commands(settings, "ExecStop")[0].argv[0] == "/sbin/ifdown"
    assert root.environment(settings) == {
        "VERBOSE": "yes", "A": "1", "CONFIGURE_INTERFACES": "yes",
        "EXCLUDE_INTERFACES": "eth9 eth8"}
    (tmp_path / "etc/default/networking").unlink()  # "-": optional
    assert root.environment(settings) == {"VERBOSE": "yes", "A": "1"}
    with pytest.raises(FjordError):
        root.environment({"EnvironmentFile": ["/etc/default/networking"]})
    assert root.unit("absent.service") == {}


def test_the_machines_own_networking_unit_if_installed() -> None:
    """On Debian 12/13 the installed unit runs `ifup -a` at boot, `ifdown -a` at shutdown,
    and openvswitch-switch.service has nothing to run."""
    root = ServerRoot(Path("/"))
    settings = root.unit("networking.service")
    if not settings:
        pytest.skip("ifupdown is not installed")
    start = commands(settings, "ExecStart")[0].argv
    assert Path(start[0]).name == "ifup" and "-a" in start
    stop = commands(settings, "ExecStop")[0].argv
    assert Path(stop[0]).name == "ifdown" and "-a" in stop
    ovs = root.unit("openvswitch-switch.service")
    if ovs:
        assert commands(ovs, "ExecStart") == []
