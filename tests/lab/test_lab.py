"""The lab itself (fjord lab): the simulated server, its upstream, reboot and cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fjord.errors import FjordError
from fjord.lab import Lab, namespaces
from fjord.lab.names import Names
from fjord.lab.procs import Proc, namespace_inode, read_json

pytestmark = pytest.mark.lab

# A DNS client in a few lines (the machine has no dig): prints the answer's addresses.
DNS_QUERY = r"""
import socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (server, 53))
r = s.recv(4096)
count, i = struct.unpack(">H", r[6:8])[0], 12
while r[i]:
    i += r[i] + 1
i += 5
out = []
for _ in range(count):
    if r[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while r[i]:
            i += r[i] + 1
        i += 1
    kind, _, _, size = struct.unpack(">HHIH", r[i:i + 10])
    data, i = r[i + 10:i + 10 + size], i + 10 + size
    if kind in (1, 28):
        out.append(socket.inet_ntop(socket.AF_INET if kind == 1 else socket.AF_INET6, data))
print(" ".join(out))
"""


def dns(lab: Lab, server: str, name: str, qtype: int) -> list[str]:
    return lab.exec([sys.executable, "-c", DNS_QUERY, server, name, str(qtype)]).stdout.split()


def fjord(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fjord", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def addressing(lab: Lab) -> tuple[list[str], list[str]]:
    """The server's addresses and routes, comparable."""
    status = lab.status()["server"]
    addresses = sorted(f"{a['ifname']} {a['address']}/{a['prefixlen']}"
                       for a in status["addresses"])
    routes = sorted(f"{r['dst']} via {r['gateway']} dev {r['ifname']}" for r in status["routes"])
    return addresses, routes


# --- connectivity -----------------------------------------------------------------------


def test_server_reaches_the_far_host_and_resolves_its_name(lab: Lab) -> None:
    assert lab.exec(["ping", "-c1", "-W2", lab.far_ipv4]).ok
    assert lab.exec(["ping", "-6", "-c1", "-W2", lab.far_ipv6]).ok
    # through the system resolver (the server's /etc/resolv.conf lists host.dns)...
    answer = lab.exec(["getent", "ahosts", lab.far_name]).stdout
    assert lab.far_ipv4 in answer and lab.far_ipv6 in answer
    # ...and from each DNS server of host.dns, over IPv4 and IPv6
    for server in ("192.0.2.53", "2001:db8:53::53"):
        assert dns(lab, server, lab.far_name, 1) == [lab.far_ipv4]
        assert dns(lab, server, lab.far_name, 28) == [lab.far_ipv6]
    assert lab.status()["upstream"]["far"]["name"] == lab.far_name


def test_server_starts_as_the_provider_installed_it(lab: Lab) -> None:
    addresses, routes = addressing(lab)
    assert "eth0 192.0.2.5/27" in addresses
    assert "eth0 2001:db8:151:7307::2/64" in addresses
    assert "default via 192.0.2.1 dev eth0" in routes
    assert "default via fe80::1 dev eth0" in routes
    interfaces = lab.exec(["cat", "/etc/network/interfaces"]).stdout
    assert "iface eth0 inet static" in interfaces and "iface eth0 inet6 static" in interfaces
    assert lab.exec(["hostname"]).stdout.strip() == "oslo"
    mac = lab.exec(["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    assert mac == lab.spec.mac == Names(lab.name).server_mac


def test_far_host_can_open_tcp_to_the_server(lab: Lab) -> None:
    server = subprocess.Popen(lab.exec_argv([sys.executable, "-c", (
        "import socket; s = socket.create_server(('', 2323)); print('ready', flush=True); "
        "c, _ = s.accept(); c.sendall(b'hello from the server'); c.close()")]),
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        got = lab.far([sys.executable, "-c", (
            "import socket; c = socket.create_connection(('192.0.2.5', 2323), timeout=3); "
            "print(c.recv(100).decode())")]).stdout
        assert got.strip() == "hello from the server"
    finally:
        server.kill()
        server.wait()


def test_up_again_changes_nothing(lab: Lab) -> None:
    before = lab.status()
    start = time.monotonic()
    assert lab.up(config=before["config"]) == "unchanged"
    assert time.monotonic() - start < 2.0
    after = lab.status()
    assert after["server"]["holder"] == before["server"]["holder"]
    assert after["server"]["daemons"] == before["server"]["daemons"]
    assert after["upstream"]["dnsmasq"] == before["upstream"]["dnsmasq"]


def test_up_repairs_the_upstream_and_changes_the_provider(lab: Lab) -> None:
    dnsmasq = lab.status()["upstream"]["dnsmasq"]
    libvirtd = lab.status()["server"]["daemons"]["libvirtd"]
    os.kill(dnsmasq, signal.SIGKILL)  # the lab started both
    os.kill(libvirtd, signal.SIGKILL)
    _wait(lambda: Proc.of(dnsmasq) is None and Proc.of(libvirtd) is None)
    assert lab.up(config=lab.status()["config"]) == "repaired"
    assert lab.status()["upstream"]["dnsmasq"] not in (None, dnsmasq)
    assert lab.exec(["getent", "hosts", lab.far_name]).ok
    # the server's daemons are the server's business: its boot or its service manager
    assert lab.status()["server"]["daemons"]["libvirtd"] is None
    assert lab.up(config=lab.status()["config"], provider="routed") == "provider changed"
    assert lab.status()["provider"] == "routed"
    assert lab.exec(["ping", "-6", "-c1", "-W2", lab.far_ipv6]).ok


# --- the providers ----------------------------------------------------------------------

FOREIGN_MAC = "00:00:5e:00:53:99"


def send_from_foreign_mac(lab: Lab) -> bool:
    """Ping the gateway from a macvlan with another MAC; True when it answered. The
    macvlan is removed afterwards (it keeps sending neighbour discovery otherwise)."""
    lab.exec(["ip", "link", "add", "mv0", "address", FOREIGN_MAC, "link", "eth0",
              "type", "macvlan", "mode", "bridge"])
    try:
        lab.exec(["ip", "address", "add", "192.0.2.9/32", "dev", "mv0"])
        lab.exec(["ip", "link", "set", "mv0", "up"])
        return lab.exec(["ping", "-c3", "-i0.2", "-W1", "-I", "mv0", "192.0.2.1"],
                        check=False).ok
    finally:
        lab.exec(["ip", "link", "del", "mv0"])


@pytest.mark.parametrize("lab", ["routed", "onlink"], indirect=True)
def test_filtering_provider_drops_and_counts_foreign_macs(lab: Lab) -> None:
    assert lab.foreign_mac().packets == 0
    assert not send_from_foreign_mac(lab)
    dropped = lab.foreign_mac().packets
    assert dropped >= 3
    # the server's own MAC still goes through
    assert lab.exec(["ping", "-c1", "-W2", lab.far_ipv4]).ok
    assert lab.foreign_mac().packets == dropped
    shown = json.loads(fjord("lab", "status", "--name", lab.name, "--json").stdout)
    assert shown["foreign_mac"] == {"packets": dropped, "bytes": lab.foreign_mac().bytes,
                                    "action": "drop"}
    text = fjord("lab", "status", "--name", lab.name).stdout
    assert f"foreign-MAC frames dropped: {dropped}" in text


def test_bridged_provider_accepts_and_counts_foreign_macs(lab: Lab) -> None:
    assert send_from_foreign_mac(lab)
    assert lab.foreign_mac().packets >= 3
    assert lab.status()["foreign_mac"]["action"] == "count"


@pytest.mark.parametrize("lab", ["routed"], indirect=True)
def test_routed_provider_routes_the_prefix_to_the_link_local_address(lab: Lab) -> None:
    routes = lab.upstream(["ip", "-6", "route", "show", "2001:db8:151:7307::/64"]).stdout
    assert f"via {lab.spec.link_local} dev server" in routes
    assert lab.exec(["ping", "-6", "-c1", "-W2", lab.far_ipv6]).ok


@pytest.mark.parametrize("lab", ["onlink"], indirect=True)
def test_onlink_provider_resolves_the_prefix_with_neighbour_discovery(lab: Lab) -> None:
    routes = lab.upstream(["ip", "-6", "route", "show", "2001:db8:151:7307::/64"]).stdout
    assert "dev server" in routes and "via" not in routes


# --- isolation --------------------------------------------------------------------------

PROBE = """table inet probe {
    counter udp9999 { }
    chain forward {
        type filter hook forward priority 0; policy accept;
        udp dport 9999 counter name "udp9999"
    }
}
"""


def probe_count(lab: Lab) -> int:
    out = json.loads(lab.upstream(["nft", "-j", "list", "counter", "inet", "probe",
                                   "udp9999"]).stdout)
    return next(i["counter"]["packets"] for i in out["nftables"] if "counter" in i)


def test_two_labs_do_not_see_each_others_traffic(make_lab: Callable[..., Lab]) -> None:
    a, b = make_lab(), make_lab()  # the same addresses in both: only isolation tells them apart
    for lab in (a, b):
        lab.upstream(["nft", "-f", "-"], input=PROBE)
    b.exec([sys.executable, "-c", (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(5): s.sendto(b'x', ('198.51.100.10', 9999))")])
    assert probe_count(b) == 5
    assert probe_count(a) == 0
    assert a.foreign_mac().packets == 0 and b.foreign_mac().packets == 0
    # each lab's server sees only its own namespaces
    assert a.exec(["ip", "netns", "list"]).stdout.strip() == ""


def test_the_server_cannot_change_the_machine(lab: Lab) -> None:
    marker = f"fjord-lab-test-{lab.name}"
    assert not lab.exec(["touch", f"/usr/{marker}"], check=False).ok
    assert not lab.exec(["sysctl", "-w", "kernel.pid_max=4194303"], check=False).ok
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    flipped = "0" if forwarding.strip() == "1" else "1"
    assert lab.exec(["sysctl", "-w", f"net.ipv4.ip_forward={flipped}"]).ok  # its own
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    for path in (f"/etc/{marker}", f"/var/lib/fjord/{marker}", f"/root/{marker}"):
        lab.exec(["touch", path])
        assert not Path(path).exists()
    assert (lab.dir / "etc.upper" / marker).exists()
    assert not lab.exec(["ls", "/var/lib/fjord-labs"], check=False).ok  # labs are hidden


def test_cgroups_inside_are_rooted_in_the_labs_sub_cgroup(lab: Lab) -> None:
    assert "memory:/\n" in lab.exec(["cat", "/proc/self/cgroup"]).stdout
    lab.exec(["mkdir", "/sys/fs/cgroup/memory/probe"])
    try:
        assert Path(f"/sys/fs/cgroup/memory/{lab.names.cgroup}/server/probe").is_dir()
        assert not Path("/sys/fs/cgroup/memory/probe").exists()
    finally:
        lab.exec(["rmdir", "/sys/fs/cgroup/memory/probe"])


# --- libvirt and Open vSwitch inside ----------------------------------------------------

DOMAIN = """<domain type='lxc'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>
  <devices>
    <filesystem type='mount'><source dir='/var/lib/lxc/{name}'/><target dir='/'/></filesystem>
    <filesystem type='mount'><source dir='/usr'/><target dir='/usr'/><readonly/></filesystem>
    {interface}
    <console type='pty'/>
  </devices>
</domain>
"""
OVS_INTERFACE = """<interface type='bridge'><source bridge='br-probe'/>
      <virtualport type='openvswitch'/></interface>"""


def start_sleep_domain(lab: Lab, name: str = "probe", interface: str = "") -> None:
    """A libvirt LXC domain whose init is /bin/sleep, on a minimal root of its own."""
    root = f"/var/lib/lxc/{name}"
    lab.exec(["mkdir", "-p", f"{root}/usr"])
    for link in ("bin", "sbin", "lib", "lib64"):
        lab.exec(["ln", "-sfn", f"usr/{link}", f"{root}/{link}"])
    xml = Path(f"/tmp/fjord-lab-{lab.name}-{name}.xml")
    xml.write_text(DOMAIN.format(name=name, interface=interface))
    try:
        lab.exec(["virsh", "-q", "-c", "lxc:///", "define", str(xml)])
    finally:
        xml.unlink()
    lab.exec(["virsh", "-q", "-c", "lxc:///", "start", name])


def test_libvirt_runs_lxc_domains_in_the_labs_cgroups(lab: Lab) -> None:
    start_sleep_domain(lab)
    assert "probe" in lab.exec(["virsh", "-c", "lxc:///", "list", "--name"]).stdout.split()
    machine = Path(f"/sys/fs/cgroup/memory/{lab.names.cgroup}/server/machine")
    [scope] = [d for d in machine.iterdir() if d.name.endswith("probe.libvirt-lxc")]
    assert int((scope / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert (scope / "cgroup.procs").read_text().split()
    lab.exec(["virsh", "-q", "-c", "lxc:///", "destroy", "probe"])
    assert "probe" not in lab.exec(["virsh", "-c", "lxc:///", "list", "--name"]).stdout.split()


def test_libvirt_plugs_openvswitch_ports_through_var_run(lab: Lab) -> None:
    assert lab.exec(["test", "-S", "/var/run/openvswitch/db.sock"]).ok
    lab.exec(["ovs-vsctl", "add-br", "br-probe", "--", "set", "bridge", "br-probe",
              "datapath_type=netdev"])
    start_sleep_domain(lab, interface=OVS_INTERFACE)
    ports = lab.exec(["ovs-vsctl", "list-ports", "br-probe"]).stdout.split()
    assert len(ports) == 1  # libvirt's end of the domain's veth pair (vnet0)
    assert "veth" in lab.exec(["ip", "-d", "link", "show", ports[0]]).stdout
    lab.exec(["virsh", "-q", "-c", "lxc:///", "destroy", "probe"])


# --- reboot -----------------------------------------------------------------------------


def test_reboot_returns_an_unconfigured_server_to_its_initial_state(lab: Lab) -> None:
    addresses, routes = addressing(lab)
    holder = lab.status()["server"]["holder"]
    # volatile changes that no file persists
    lab.exec(["ip", "address", "add", "203.0.113.7/32", "dev", "lo"])
    lab.exec(["sysctl", "-w", "net.ipv4.ip_forward=1"])
    lab.exec(["nft", "add", "table", "inet", "volatile"])
    lab.exec(["ovs-vsctl", "add-br", "br-persisted", "--", "set", "bridge", "br-persisted",
              "datapath_type=netdev"])
    report = lab.reboot()
    assert report.ok, report.to_json()
    assert addressing(lab) == (addresses, routes)
    status = lab.status()
    assert status["server"]["holder"] not in (None, holder)
    assert all(status["server"]["daemons"].values())
    assert lab.exec(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    assert lab.exec(["nft", "list", "ruleset"]).stdout.strip() == ""
    # the Open vSwitch database is persisted, like on a real server
    assert "br-persisted" in lab.exec(["ovs-vsctl", "list-br"]).stdout.split()
    assert lab.exec(["ping", "-c1", "-W2", lab.far_ipv4]).ok
    assert lab.exec(["ping", "-6", "-c1", "-W2", lab.far_ipv6]).ok
    assert lab.spec.mac == lab.exec(["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def test_reboot_kills_containers_and_starts_the_autostart_ones(lab: Lab) -> None:
    start_sleep_domain(lab, "kept")
    start_sleep_domain(lab, "gone")
    lab.exec(["virsh", "-q", "-c", "lxc:///", "autostart", "kept"])
    old = {p for p in map(Proc.of, lab.cgroup.procs("server")) if p is not None}
    report = lab.reboot()
    assert report.ok, report.to_json()
    assert not [p for p in old if p.alive()]
    # libvirtd starts autostart domains right after its driver answers
    _wait(lambda: "kept" in lab.exec(["virsh", "-c", "lxc:///", "list", "--name"]).stdout,
          timeout=20, what="the autostart domain to run")
    assert "gone" not in lab.exec(["virsh", "-c", "lxc:///", "list", "--name"]).stdout


def test_reboot_takes_the_hostname_from_etc_hostname(lab: Lab) -> None:
    lab.exec(["sh", "-c", "echo bergen > /etc/hostname"])
    assert lab.exec(["hostname"]).stdout.strip() == "oslo"  # until the next boot
    assert lab.reboot().ok
    assert lab.exec(["hostname"]).stdout.strip() == "bergen"


def test_reboot_replays_persisted_sysctl_and_nftables(lab: Lab) -> None:
    lab.exec(["sh", "-c", "printf 'net.ipv4.ip_forward = 1\\nkernel.pid_max = 99999\\n'"
              " > /etc/sysctl.d/60-probe.conf"])
    lab.exec(["sh", "-c", "printf 'table inet persisted {\\n}\\n' > /etc/nftables.conf"])
    lab.exec(["mkdir", "-p", "/etc/systemd/system/sysinit.target.wants"])
    lab.exec(["ln", "-sf", "/lib/systemd/system/nftables.service",
              "/etc/systemd/system/sysinit.target.wants/nftables.service"])
    pid_max = Path("/proc/sys/kernel/pid_max").read_text()
    report = lab.reboot()
    assert report.ok, report.to_json()
    assert lab.exec(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert Path("/proc/sys/kernel/pid_max").read_text() == pid_max  # never applied
    assert "table inet persisted" in lab.exec(["nft", "list", "tables"]).stdout


# --- lifecycle --------------------------------------------------------------------------


def test_a_stale_lab_is_cleaned_up_by_the_next_up(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    holder = lab.holder()
    assert holder is not None
    os.kill(holder.pid, signal.SIGKILL)  # as if the machine lost it; the lab started it
    _wait(lambda: not holder.alive())
    assert lab.status()["state"] == "broken"
    assert lab.up(config=lab.status()["config"]) == "created"
    assert lab.exec(["ping", "-c1", "-W2", lab.far_ipv4]).ok


def test_labs_of_a_dead_owner_are_orphans(lab_name: str, lab_config: str) -> None:
    from fjord.lab import orphans

    owner = subprocess.Popen(["sleep", "60"])
    lab = Lab(lab_name)
    try:
        lab.up(config=lab_config, owner=owner.pid)
        assert lab_name not in orphans()
        owner.kill()
        owner.wait()
        assert lab_name in orphans()
    finally:
        owner.kill()
        lab.down()
    assert lab_name not in orphans()


def test_a_name_in_use_by_something_else_is_refused(lab_name: str, lab_config: str) -> None:
    lab = Lab(lab_name)
    namespaces.create(lab.names.netns_upstream)  # not the lab's
    try:
        with pytest.raises(FjordError, match="in use by something else"):
            lab.up(config=lab_config)
        assert namespaces.exists(lab.names.netns_upstream)
        assert not lab.dir.exists()
    finally:
        namespaces.remove(lab.names.netns_upstream)


def test_exec_passes_stdin_environment_directory_and_status(lab: Lab, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fjord", "lab", "exec", "--name", lab.name, "--",
         "sh", "-c", 'cat; echo "$PROBE"; pwd; hostname; exit 3'],
        input="from stdin\n", capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PROBE": "from the environment"})
    assert result.returncode == 3
    assert result.stdout.splitlines() == ["from stdin", "from the environment", str(tmp_path),
                                          "oslo"]
    far = fjord("lab", "upstream", "--far", "--name", lab.name, "--", "ip", "-br", "address")
    assert "198.51.100.10/24" in far.stdout


def test_cli_up_status_down(lab_name: str, lab_config: str) -> None:
    name = lab_name
    env = {**os.environ, "FJORD_CONFIG": lab_config}
    try:
        up = fjord("lab", "up", "--name", name, "--provider", "onlink", env=env)
        assert up.returncode == 0, up.stderr
        assert "created" in up.stdout
        assert fjord("lab", "up", "--name", name, "--provider", "onlink",
                     env=env).stdout.split()[2] == "unchanged"
        status = fjord("lab", "status", "--name", name, "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["provider"] == "onlink"
        reboot = fjord("lab", "reboot", "--name", name)
        assert reboot.returncode == 0, reboot.stdout + reboot.stderr
    finally:
        down = fjord("lab", "down", "--name", name)
    assert down.returncode == 0 and "removed" in down.stdout
    assert fjord("lab", "status", "--name", name).returncode == 1
    assert fjord("lab", "exec", "--name", name, "--", "true").returncode == 125


# --- down leaves the machine as it was --------------------------------------------------


def _root_netns_state() -> dict[str, object]:
    """Links, addresses, routes and nft ruleset of the machine's own namespace (read only)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted((link["index"], link.get("ifname"), link.get("address"),
                        link.get("mtu")) for link in ipr.get_links())
        addresses = sorted((a["index"], a.get("address"), a["prefixlen"])
                           for a in ipr.get_addr())
        routes = sorted(json.dumps({"dst": r.get("dst"), "len": r["dst_len"],
                                    "gw": r.get("gateway"), "oif": r.get("oif"),
                                    "table": r.get("table"), "family": r["family"]},
                                   sort_keys=True)
                        for r in ipr.get_routes(table=0))
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                             check=True).stdout
    return {"links": links, "addresses": addresses, "routes": routes, "nft": ruleset}


def _mounts(lab: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        entry = " ".join([fields[3], fields[4], *line.partition(" - ")[2].split()[:2]])
        if "/run/netns" in entry and f"fjord-{lab}-" not in entry:
            continue  # other namespaces come and go (other labs, other tests)
        out.append(entry)
    return sorted(out)


def _cgroup_roots(lab: str) -> dict[str, list[str]]:
    from fjord.lab.cgroups import ROOT, hierarchies

    return {h: sorted(d.name for d in (ROOT / h).iterdir() if d.is_dir() and
                      not (d.name.startswith("fjord-lab-") and d.name != f"fjord-lab-{lab}"))
            for h in hierarchies()}


def _netns(lab: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    return sorted(n.split()[0] for n in listed.splitlines() if f"fjord-{lab}-" in n)


def _snapshot(lab: str) -> dict[str, object]:
    return {**_root_netns_state(), "mounts": _mounts(lab), "cgroups": _cgroup_roots(lab),
            "netns": _netns(lab)}


def test_down_leaves_the_machine_as_before(make_lab: Callable[..., Lab], lab_name: str) -> None:
    name = lab_name
    before = _snapshot(name)
    lab = make_lab(name=name)
    start_sleep_domain(lab)
    lab.exec(["ovs-vsctl", "add-br", "br-probe", "--", "set", "bridge", "br-probe",
              "datapath_type=netdev"])
    started = {p for p in map(Proc.of, lab.cgroup.procs()) if p is not None}
    assert len(started) >= 6  # holder, ovsdb-server, ovs-vswitchd, libvirtd, dnsmasq, domain
    mnt = read_json(lab.dir / "holder.json")["mnt"]  # type: ignore[index]
    during = _snapshot(name)
    assert during["netns"] == sorted(lab.names.all_netns)
    assert during["links"] == before["links"]  # the lab never touches the root namespace

    assert lab.down()

    after = _snapshot(name)
    for key in before:
        assert after[key] == before[key], key
    assert not [p.pid for p in started if p.alive()]
    assert not [pid for pid in _pids() if namespace_inode(pid, "mnt") == mnt]
    assert not lab.dir.exists()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _wait(condition: Callable[[], bool], timeout: float = 5.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
