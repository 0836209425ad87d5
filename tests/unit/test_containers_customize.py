"""Customisation of a container's root: rendered files (golden), what lands on disk
(modes, idempotence, identities made once), and refusal to write through links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from goldens import check_golden

from fjord.config.desired import Desired, load
from fjord.containers import customize
from fjord.containers.tree import Tree, UnsafePath

GOLDEN = Path(__file__).parent / "golden" / "containers"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB6wJ8f1pX5hFqg7xTtD8cLrD3mO6c2k0o6pZ4vQ0aZr ops@example"

CONFIG = """
version: 1
host:
  fqdn: oslo.example.net
  switch: {{kind: {switch}}}
  ipv4: {{address: 192.0.2.5/27, gateway: 192.0.2.1}}
{ipv6}
  private: {{address: 10.1.0.1/16}}
  dns: [192.0.2.53, 2001:db8:53::53, 192.0.2.54, 192.0.2.55]
defaults: {{domain: example.net, memory: 512MiB}}
containers:
  test:
    ipv4: 10.1.0.2
    mac: {{private: "52:54:00:00:00:02"}}
    ssh_keys: ["{key}"]
    puppet: {{server: tromso.example.net, enable: {puppet_enable}}}
  web:
    ipv4: 10.1.0.3
    locale: en_US.UTF-8
"""
IPV6 = {
    "routed": "  ipv6: {address: 2001:db8:151:7307::2/64, mode: routed}",
    "bridged": "  ipv6: {address: 2001:db8:151:7307::2/64, mode: bridged}",
    "none": "",
}


def desired(tmp_path: Path, ipv6: str = "routed", switch: str = "ovs",
            puppet_enable: bool = False) -> Desired:
    path = tmp_path / f"fjord-{ipv6}-{switch}.yaml"
    path.write_text(CONFIG.format(switch=switch, ipv6=IPV6[ipv6], key=KEY,
                                  puppet_enable=str(puppet_enable).lower()))
    return load(str(path))


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


def files(d: Desired, name: str = "test") -> dict[str, bytes]:
    out = {}
    for item in customize.files_for(d.container(name), d):
        if isinstance(item, customize.RootFile):
            out[item.path] = item.content
    return out


# --- rendered files ----------------------------------------------------------------


def test_interfaces_routed_puts_ipv6_on_eth0_with_the_host_as_gateway(tmp_path):
    text = files(desired(tmp_path, "routed"))["/etc/network/interfaces"].decode()
    golden("interfaces.routed", text)
    assert "eth1" not in text  # routed: the container has no port on the uplink's bridge
    assert "iface eth0 inet6 static" in text and "/128" in text
    assert "gateway fe80::1" in text and "dad-attempts 0" in text


def test_interfaces_bridged_puts_ipv6_on_eth1_on_link(tmp_path):
    text = files(desired(tmp_path, "bridged"))["/etc/network/interfaces"].decode()
    golden("interfaces.bridged", text)
    assert "auto eth1" in text and "iface eth1 inet6 static" in text
    assert "2001:db8:151:7307:1::1/64" in text and "gateway fe80::1" in text


def test_interfaces_without_ipv6(tmp_path):
    text = files(desired(tmp_path, "none"))["/etc/network/interfaces"].decode()
    assert "inet6" not in text and "gateway 10.1.0.1" in text and "10.1.0.2/16" in text


def test_routed_gateway_is_the_one_the_network_side_configures():
    from fjord.net.interfaces import ROUTED_GATEWAY6

    assert customize.ROUTED_GATEWAY6 == ROUTED_GATEWAY6


def test_hosts_resolv_sshd_puppet_golden(tmp_path):
    f = files(desired(tmp_path, "routed"))
    golden("hosts", f["/etc/hosts"].decode())
    golden("resolv.conf", f["/etc/resolv.conf"].decode())
    golden("sshd_config.d-fjord.conf", f["/etc/ssh/sshd_config.d/fjord.conf"].decode())
    golden("puppet.conf", f["/etc/puppet/puppet.conf"].decode())
    assert f["/etc/hostname"] == b"test\n"
    assert "certname = test.example.net" in f["/etc/puppet/puppet.conf"].decode()
    assert "PasswordAuthentication no" in f["/etc/ssh/sshd_config.d/fjord.conf"].decode()


def test_resolv_conf_keeps_three_servers_and_drops_ipv6_without_ipv6(tmp_path):
    with_v6 = files(desired(tmp_path, "routed"))["/etc/resolv.conf"].decode()
    assert with_v6.count("nameserver") == 3 and "2001:db8:53::53" in with_v6
    without = files(desired(tmp_path, "none"))["/etc/resolv.conf"].decode()
    assert "2001:db8" not in without and without.count("nameserver") == 3
    assert "search example.net" in without


def test_no_puppet_no_puppet_files(tmp_path):
    f = files(desired(tmp_path), "web")
    assert "/etc/puppet/puppet.conf" not in f
    assert f["/etc/default/locale"] == b"LANG=en_US.UTF-8\n"
    assert b"no keys configured" in f["/root/.ssh/authorized_keys"]


# --- on disk -----------------------------------------------------------------------


def image_skeleton(root: Path) -> Path:
    """The parts of a Debian image customisation touches."""
    for d in ("etc/ssh/sshd_config.d", "etc/network", "etc/default", "etc/puppet",
              "etc/systemd/system/multi-user.target.wants", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    (root / "etc/shadow").write_text("root:*:20000:0:99999:7:::\ndaemon:*:20000::::::\n")
    (root / "etc/shadow").chmod(0o640)
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    # puppet's postinst enables its service in the image
    (root / customize.PUPPET_WANTS.lstrip("/")).symlink_to("/lib/systemd/system/puppet.service")
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_customize_writes_files_with_their_modes(tmp_path):
    root = image_skeleton(tmp_path / "root")
    d = desired(tmp_path)
    changed = customize.customize(root, d.container("test"), d)
    assert "/etc/hosts" in changed and "/etc/machine-id" in changed
    assert mode(root / "root/.ssh") == 0o700
    assert mode(root / "root/.ssh/authorized_keys") == 0o600
    assert (root / "root/.ssh/authorized_keys").read_text().endswith(KEY + "\n")
    machine_id = (root / "etc/machine-id").read_text().strip()
    assert len(machine_id) == 32 and int(machine_id, 16)
    for kind in customize.HOST_KEY_TYPES:
        key = root / f"etc/ssh/ssh_host_{kind}_key"
        assert mode(key) == 0o600 and mode(key.with_name(key.name + ".pub")) == 0o644
        assert "root@test.example.net" in key.with_name(key.name + ".pub").read_text()
    assert not (root / "etc/ssh/ssh_host_rsa_key").exists()
    # puppet.enable is false: the service the package enabled is not started at boot
    assert not os.path.lexists(root / customize.PUPPET_WANTS.lstrip("/"))
    assert (root / "etc/hostname").read_text() == "test\n"
    # the domain's init (a cgroup namespace before systemd), executable
    assert "/usr/local/sbin/fjord-init" in changed
    assert mode(root / "usr/local/sbin/fjord-init") == 0o755
    assert (root / "usr/local/sbin/fjord-init").read_text().startswith("#!/bin/sh\n")


def test_customize_twice_changes_nothing_and_keeps_identities(tmp_path):
    root = image_skeleton(tmp_path / "root")
    d = desired(tmp_path)
    customize.customize(root, d.container("test"), d)
    ident = ((root / "etc/machine-id").read_bytes(),
             (root / "etc/ssh/ssh_host_ed25519_key").read_bytes())
    assert customize.customize(root, d.container("test"), d) == []
    assert ident == ((root / "etc/machine-id").read_bytes(),
                     (root / "etc/ssh/ssh_host_ed25519_key").read_bytes())


def test_pending_says_what_customize_would_change_and_changes_nothing(tmp_path):
    root = image_skeleton(tmp_path / "root")
    (root / "etc/shadow").write_text("root::20000:0:99999:7:::\n")
    d = desired(tmp_path)
    before = sorted(str(p) for p in root.rglob("*"))
    todo = customize.pending(root, d.container("test"), d)
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert {"/etc/hosts", "/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key", "/etc/shadow",
            customize.PUPPET_WANTS} <= set(todo)
    customize.customize(root, d.container("test"), d)
    assert customize.pending(root, d.container("test"), d) == []


def test_two_containers_never_share_identities(tmp_path):
    d = desired(tmp_path)
    roots = [image_skeleton(tmp_path / n) for n in ("a", "b")]
    for r in roots:
        customize.customize(r, d.container("test"), d)
    a, b = roots
    assert (a / "etc/machine-id").read_bytes() != (b / "etc/machine-id").read_bytes()
    assert (a / "etc/ssh/ssh_host_ed25519_key").read_bytes() != \
        (b / "etc/ssh/ssh_host_ed25519_key").read_bytes()


def test_puppet_enable_links_the_service(tmp_path):
    root = image_skeleton(tmp_path / "root")
    (root / customize.PUPPET_WANTS.lstrip("/")).unlink()
    d = desired(tmp_path, puppet_enable=True)
    customize.customize(root, d.container("test"), d)
    assert os.readlink(root / customize.PUPPET_WANTS.lstrip("/")) == \
        "/lib/systemd/system/puppet.service"


def test_root_password_is_locked(tmp_path):
    root = image_skeleton(tmp_path / "root")
    (root / "etc/shadow").write_text("root:$6$salt$hash:20000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o640)
    d = desired(tmp_path)
    assert "/etc/shadow" in customize.customize(root, d.container("test"), d)
    assert (root / "etc/shadow").read_text() == "root:*:20000:0:99999:7:::\n"
    assert mode(root / "etc/shadow") == 0o640


def test_a_link_planted_in_the_container_is_replaced_not_followed(tmp_path):
    root = image_skeleton(tmp_path / "root")
    outside = tmp_path / "host-file"
    outside.write_text("the host's own\n")
    (root / "etc/hosts").symlink_to(outside)
    d = desired(tmp_path)
    customize.customize(root, d.container("test"), d)
    assert outside.read_text() == "the host's own\n"
    assert not (root / "etc/hosts").is_symlink()


def test_a_linked_directory_is_refused(tmp_path):
    root = image_skeleton(tmp_path / "root")
    outside = tmp_path / "host-dir"
    outside.mkdir()
    os.rename(root / "etc/network", tmp_path / "moved")
    (root / "etc/network").symlink_to(outside)
    d = desired(tmp_path)
    with pytest.raises(UnsafePath):
        customize.customize(root, d.container("test"), d)
    assert list(outside.iterdir()) == []


def test_tree_rejects_paths_leaving_the_root(tmp_path):
    with pytest.raises(ValueError):
        Tree(tmp_path).write("/etc/../../x", b"")


def test_containers_resolve_each_other_and_the_host(tmp_path):
    d = desired(tmp_path, ipv6="bridged")
    web = files(d, "web")["/etc/hosts"].decode()
    assert "10.1.0.2\ttest.example.net test\n" in web
    assert "10.1.0.1\toslo.example.net oslo\n" in web
    assert f"{d.container('test').ipv6}\ttest.example.net test\n" in web
    # a container kept out of the file (not pruned) is still listed while it exists
    from dataclasses import replace

    kept = replace(d, allocations={**d.allocations, "old": {
        "ipv4": "10.1.0.9", "mac_private": "52:54:00:00:00:09"}})
    assert "10.1.0.9\told.example.net old\n" in files(kept, "web")["/etc/hosts"].decode()
    # with no IPv6 on the host, no IPv6 lines at all
    v4 = files(desired(tmp_path, ipv6="none"), "web")["/etc/hosts"].decode()
    assert "10.1.0.2\ttest.example.net test\n" in v4 and "2001:" not in v4


# --- the suite's layout (issue 15, item 5) -------------------------------------------------


LANG = "LANG=C.UTF-8\n"  # the container "test" takes the built-in locale


def trixie_skeleton(root: Path) -> Path:
    """trixie's locale layout: /etc/default/locale is a link to ../locale.conf, which
    has no LANG as the image leaves it."""
    image_skeleton(root)
    (root / "etc/locale.conf").write_text("# no LANG here yet\n")
    (root / "etc/default/locale").symlink_to("../locale.conf")
    return root


def test_trixie_locale_link_is_kept_and_written_through(tmp_path):
    root = trixie_skeleton(tmp_path / "root")
    d = desired(tmp_path)
    c = d.container("test")
    assert "/etc/locale.conf" in customize.pending(root, c, d)
    changed = customize.customize(root, c, d)
    assert "/etc/locale.conf" in changed and "/etc/default/locale" not in changed
    assert os.readlink(root / "etc/default/locale") == "../locale.conf"
    assert (root / "etc/locale.conf").read_text() == LANG
    # the second apply is empty
    assert customize.pending(root, c, d) == []
    assert customize.customize(root, c, d) == []


def test_bookworm_locale_file_is_written_in_place(tmp_path):
    root = image_skeleton(tmp_path / "root")
    d = desired(tmp_path)
    customize.customize(root, d.container("test"), d)
    assert (root / "etc/default/locale").read_text() == LANG
    assert not (root / "etc/default/locale").is_symlink()
    assert not (root / "etc/locale.conf").exists()


@pytest.mark.parametrize("target", [
    "../../../../../../outside",    # climbs out of the root
    "/etc/shadow",                  # another file fjord manages
    "../../run/locale",             # volatile: /run is mounted over at run time
    "locale",                       # a loop
])
def test_a_locale_link_out_of_bounds_is_replaced_not_followed(tmp_path, target):
    root = image_skeleton(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.write_text("the host's own\n")
    shadow = (root / "etc/shadow").read_text()
    (root / "etc/default/locale").symlink_to(target)
    d = desired(tmp_path)
    assert "/etc/default/locale" in customize.customize(root, d.container("test"), d)
    assert not (root / "etc/default/locale").is_symlink()
    assert (root / "etc/default/locale").read_text() == LANG
    assert outside.read_text() == "the host's own\n"
    assert (root / "etc/shadow").read_text() == shadow
    assert not (root / "run").exists()
    assert customize.customize(root, d.container("test"), d) == []


def test_resolve_follows_links_as_the_container_sees_them(tmp_path):
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/a").symlink_to("/etc/b")
    (root / "etc/b").symlink_to("default/c")
    tree = Tree(root)
    assert customize.resolve(tree, "/etc/default/a") == "/etc/default/c"
    assert customize.resolve(tree, "/etc/hostname") == "/etc/hostname"
    (root / "etc/default/up").symlink_to("../../..")
    assert customize.resolve(tree, "/etc/default/up") is None
