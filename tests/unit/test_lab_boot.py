"""The lab's boot: which sysctl keys it replays, in which order, and what is "enabled"."""

from __future__ import annotations

from pathlib import Path

from fjord.lab.boot import ServerRoot, net_settings, parse_sysctl, sysctl_files


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
