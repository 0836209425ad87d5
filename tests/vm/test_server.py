"""A real Debian server, from its provider's installer to two reboots after fjord.

The tests run in order against one server per release (conftest.server): each step is
what a server owner does, driven over SSH from the provider's side, and each assertion
is something they would notice: the server answers, through the same MAC, after every
reboot, and fjord says it is as declared without being applied again.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from server import CONFIG, FJORD, Server

pytestmark = pytest.mark.vm

# What the provider sees of the server: its neighbour entry for the server's IPv4.
_LLADDR = re.compile(r"lladdr ([0-9a-f:]{17})")


def provider_sees(server: Server) -> str | None:
    server.upstream(["ping", "-c1", "-W2", server.ipv4])
    out = server.upstream(["ip", "neigh", "show", server.ipv4]).stdout
    m = _LLADDR.search(out)
    return m.group(1) if m else None


def answers(server: Server) -> None:
    """Ping (v4 and v6) and SSH from the provider's side."""
    v4 = server.upstream(["ping", "-c3", "-W3", server.ipv4])
    assert v4.returncode == 0, f"no IPv4 answer from the server:\n{v4.stdout}"
    if server.ipv6:
        v6 = server.upstream(["ping", "-6", "-c3", "-W3", server.ipv6])
        assert v6.returncode == 0, f"no IPv6 answer from the server:\n{v6.stdout}"
    assert server.vm.ssh("true", timeout=60, check=False).ok


def changes(server: Server, command: str) -> list[dict[str, str]]:
    answer = server.fjord(command, "-c", CONFIG, "--json", *(
        ["--yes"] if command == "apply" else []))
    return json.loads(answer.stdout)["changes"]


def test_installer_state(server: Server) -> None:
    """The server as the provider hands it over: reachable, addresses on its NIC."""
    answers(server)
    interfaces = server.vm.ssh("cat /etc/network/interfaces").stdout
    assert "source /etc/network/interfaces.d/*" in interfaces
    server.mac = server.vm.uplink_mac()
    assert provider_sees(server) == server.mac


def test_install_as_the_readme_says(server: Server) -> None:
    """The README's offline install: copy the bundle, unpack, run its install script."""
    server.vm.copy_in(server.bundle, "/root/")
    name = server.bundle.name.removesuffix(".tar.gz")
    server.vm.ssh(f"cd /root && tar xzf {name}.tar.gz && ./{name}/install", timeout=1200)
    assert "fjord" in server.fjord("--help").stdout
    page = server.vm.ssh("head -n1 /usr/local/share/man/man8/fjord.8").stdout
    assert page.startswith(".TH FJORD 8"), page


def test_validate_and_plan(server: Server) -> None:
    server.vm.ssh("mkdir -p /etc/fjord")
    server.vm.copy_in(server.config, CONFIG)
    server.fjord("validate", "-c", CONFIG)
    planned = changes(server, "plan")
    assert planned, "a fresh server must need changes"
    kinds = {c["resource"].split()[0] for c in planned}
    assert {"uplink", "bridge", "packages"} <= kinds, kinds


def test_apply_under_ping(server: Server) -> None:
    """The switchover while the provider pings the server every 0.1 s: count losses."""
    ping = subprocess.Popen(server.provider.nsenter("upstream", [
        "ping", "-n", "-i", "0.1", "-W", "1", server.ipv4]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        start = time.monotonic()
        made = changes(server, "apply")
        took = time.monotonic() - start
    finally:
        ping.send_signal(2)
        out, _ = ping.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    print(f"apply: {len(made)} change(s) in {took:.0f} s; pings lost {sent - got} of {sent}")
    assert made
    assert sent - got <= max(3, sent // 100), f"{sent - got} of {sent} pings lost"
    answers(server)
    assert provider_sees(server) == server.mac
    assert server.provider.foreign_macs() == 0


def test_apt_ran_for_real(server: Server) -> None:
    """fjord's APT management against the provider's mirror: sources written, the
    lists updated from the mirror, and the host packages installed from it."""
    sources = server.vm.ssh("cat /etc/apt/sources.list.d/fjord-debian.sources").stdout
    assert "deb.debian.org" in sources
    server.vm.ssh("dpkg-query -W tree openvswitch-switch libvirt-daemon-system")
    lists = server.vm.ssh("ls /var/lib/apt/lists").stdout
    assert "deb.debian.org_debian_dists" in lists


def test_second_apply_is_empty(server: Server) -> None:
    assert changes(server, "apply") == []


def diagnostics(server: Server) -> str:
    """What to look at when a check fails on the server: the internal bridge's flows and
    ports, the container's links and boot state."""
    out = []
    for command in ("ovs-ofctl dump-flows br-int", "ovs-vsctl show",
                    f"{FJORD} container exec web -- ip -br address",
                    f"{FJORD} container exec web -- systemctl --failed --no-legend",
                    "journalctl -b --no-pager -n 60 -u libvirtd"):
        answer = server.vm.ssh(command, check=False, timeout=120)
        out.append(f"$ {command}\n{answer.stdout}{answer.stderr}")
    return "\n".join(out)


def check_green(server: Server) -> None:
    answer = server.fjord("check", "-c", CONFIG, "--json", check=False, timeout=900)
    try:
        checks = json.loads(answer.stdout)["checks"]
    except ValueError:
        raise AssertionError(f"fjord check printed no report (exit {answer.returncode}):\n"
                             f"{answer.stderr}\n{diagnostics(server)}") from None
    failed = [c for c in checks if not c["ok"]]
    assert answer.returncode == 0 and not failed, \
        json.dumps(failed, indent=1) + "\n" + (diagnostics(server) if failed else "")


def test_check_is_green(server: Server) -> None:
    check_green(server)


VETH_LINK = "/etc/systemd/network/10-fjord-veth.link"


def veth_mac_taken_by_udev(server: Server) -> bool:
    """Whether udev gives a fresh veth a MAC of its own (the kernel's is random:
    addr_assign_type 1; one set after it reads 3), as it raced libvirt for each
    container's link."""
    answer = server.vm.ssh(
        "ip link add fjtest0 type veth peer name fjtest1 && udevadm settle --timeout=60; "
        "cat /sys/class/net/fjtest0/addr_assign_type; ip link del fjtest0")
    return answer.stdout.split()[0] == "3"


def test_udev_leaves_the_containers_macs_to_libvirt(server: Server) -> None:
    """Debian 12's udev (MACAddressPolicy=persistent) overwrote the MAC libvirt had just
    set on a container's veth in about one start in three: eth0 came up with a MAC
    nobody declared, and br-int's flows dropped everything it sent. Without fjord's
    .link file udev's policy applies (printed: whether this release's udev takes a
    veth's MAC); with it, udev keeps off."""
    server.vm.ssh(f"mv {VETH_LINK} /root/fjord-veth.link && udevadm control --reload")
    try:
        print(f"without {VETH_LINK}: udev takes a new veth's MAC: "
              f"{veth_mac_taken_by_udev(server)}")
    finally:
        server.vm.ssh(f"mv /root/fjord-veth.link {VETH_LINK} && udevadm control --reload")
    assert not veth_mac_taken_by_udev(server)
    exec_ = [FJORD, "container", "exec", "web", "--"]
    eth0 = server.vm.ssh([*exec_, "cat", "/sys/class/net/eth0/address"]).stdout.strip()
    declared = server.vm.ssh(["virsh", "-c", "lxc:///", "domiflist", "web"]).stdout
    assert eth0 in declared, declared


@pytest.mark.parametrize("n", [1, 2])
def test_reboot(server: Server, n: int) -> None:
    """A real reboot: the server comes back on its own, through the same MAC, and
    fjord finds it as declared without being applied."""
    seconds = server.vm.reboot()
    print(f"reboot {n}: SSH answered after {seconds:.0f} s")
    answers(server)
    assert provider_sees(server) == server.mac
    bridge_mac = server.vm.ssh("cat /sys/class/net/br-ex/address").stdout.strip()
    assert bridge_mac == server.mac
    assert server.provider.foreign_macs() == 0
    running = server.vm.ssh("virsh -c lxc:/// list --name").stdout.split()
    assert "web" in running
    # check probes the container as it is now: first let its own boot finish (a
    # container autostarted with the host may still be starting services under TCG)
    booted = server.fjord("container", "exec", "web", "--", "systemctl",
                          "is-system-running", "--wait", check=False, timeout=600)
    print(f"reboot {n}: the container's systemd says {booted.stdout.strip()!r}")
    check_green(server)
    assert changes(server, "plan") == []


CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
           "except OSError as exc:\n"
           "    sys.exit(f'{type(exc).__name__}: {exc}')\n")


def test_the_input_firewall_after_the_reboots(server: Server) -> None:
    """host.firewall on a real boot: after two reboots, from the provider's side, the
    listed port answers and another one (a listener there too) is dropped; SSH answered
    all along (test_reboot)."""
    pids = [server.vm.ssh(f"setsid python3 -m http.server {port} >/dev/null 2>&1 "
                          "</dev/null & echo $!").stdout.strip() for port in (80, 8081)]
    try:
        time.sleep(2)  # the listeners bind
        listed = server.upstream(["python3", "-c", CONNECT, server.ipv4, "80"])
        assert listed.returncode == 0, listed.stdout + listed.stderr
        other = server.upstream(["python3", "-c", CONNECT, server.ipv4, "8081"])
        assert other.returncode != 0 and "timed out" in other.stderr, \
            other.stdout + other.stderr
        inside = server.vm.ssh(["python3", "-c", CONNECT, "127.0.0.1", "8081"], check=False)
        assert inside.ok, inside.stderr  # the host itself still reaches its own port
    finally:
        server.vm.ssh(["kill", *pids], check=False)


def test_container_sees_only_its_own_cgroups(server: Server) -> None:
    """cgroup v2 (both releases): the container is in a cgroup namespace of its own,
    rooted at libvirt's cgroup; the host's tree (machine.slice, system.slice of the
    host, user.slice) is out of its sight (that the limit holds is fjord check's)."""
    exec_ = [FJORD, "container", "exec", "web", "--"]
    own = server.vm.ssh([*exec_, "cat", "/proc/self/cgroup"]).stdout.strip()
    assert own.startswith("0::/") and "machine" not in own, own
    seen = server.vm.ssh([*exec_, "ls", "/sys/fs/cgroup"]).stdout.split()
    print(f"the container's /sys/fs/cgroup: {' '.join(seen)}")
    # a cgroup2 root of its own, where the container's systemd made its init.scope (and
    # its own system.slice, and user.slice: trixie's makes one at boot); the host's
    # machine.slice, which holds every container, is out of sight
    assert "init.scope" in seen and "machine.slice" not in seen, seen
