"""The firewall's behaviour, on a small topology of throwaway network namespaces.

    far host + provider router   <- veth ->   host (br-ex, br-int bridge)   <- veth ->  test, web
    (NS-up: 192.0.2.1,                        (NS-host: 192.0.2.5,                      (10.1.0.2,
     198.51.100.10, 2001:db8:ffff::10)          10.1.0.1/16, routes the IPv6)            10.1.0.3)

fjord's Firewall resource runs against NS-host (its nft driver runs there), exactly as
on a server; nothing touches the machine's own namespace. Listeners answer each
connection with the address they saw, so the tests read what NAT did.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fjord import environment
from fjord.config.desired import Desired, load
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context
from fjord.net import firewall
from fjord.net.firewall import Firewall, Ruleset
from fjord.net.nft import Nft

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                       reason="needs root, nft and ip (network namespaces)"),
]

CONFIG = """\
version: 1
host:
  fqdn: oslo.example.net
  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}
  ipv6: {address: "2001:db8:151:7307::2/64"}
  private: {address: 10.1.0.1/16}
  dns: [192.0.2.53]
  forwards:
    - {protocol: tcp, port: 8080, container: test, to_port: 80}
    - {protocol: udp, port: 5300, container: test, to_port: 53}
containers:
  test: {ipv4: 10.1.0.2, ipv6: "2001:db8:151:7307:1::1", mac: {private: "52:54:00:0f:00:02"}}
  web: {ipv4: 10.1.0.3, ipv6: "2001:db8:151:7307:1::2", mac: {private: "52:54:00:0f:00:03"}}
"""
# each container's eth0 has its declared MAC: the firewall ties public IPv6 sources to it
MACS = {"test": "52:54:00:0f:00:02", "web": "52:54:00:0f:00:03"}
PUBLIC, FAR, FAR6 = "192.0.2.5", "198.51.100.10", "2001:db8:ffff::10"
TEST, WEB, TEST6 = "10.1.0.2", "10.1.0.3", "2001:db8:151:7307:1::1"
TIMEOUT = 2.0

# Answers each TCP connection / UDP datagram with the peer address it saw.
LISTENER = textwrap.dedent("""
    import socket, sys
    proto, port = sys.argv[1], int(sys.argv[2])
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(8)
    print("ready", flush=True)
    while True:
        if kind == socket.SOCK_STREAM:
            c, peer = s.accept()
            c.sendall(peer[0].removeprefix("::ffff:").encode() + b"\\n")
            c.close()
        else:
            data, peer = s.recvfrom(512)
            s.sendto(peer[0].removeprefix("::ffff:").encode() + b"\\n", peer)
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    proto, host, port, timeout, source = sys.argv[1:6]
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    s.settimeout(float(timeout))
    port = int(port)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        if kind == socket.SOCK_DGRAM:
            s.send(b"hello")
        print(s.recv(512).decode().strip())
    except OSError as exc:
        print(f"error: {exc}")
        sys.exit(1)
""")


@dataclass
class Topology:
    tag: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"fjord-t-{self.tag}-{role}"

    @property
    def names(self) -> list[str]:
        return [self.ns(r) for r in ("up", "host", "test", "web")]

    def run(self, role: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(role), *argv], text=True,
                              capture_output=True, check=check, timeout=30)

    def ip(self, role: str, *argv: str) -> None:
        subprocess.run(["ip", "-n", self.ns(role), *argv], check=True, capture_output=True,
                       text=True, timeout=30)

    def listen(self, role: str, proto: str, port: int) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(role), sys.executable, "-c", LISTENER, proto,
             str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(10), f"listener {proto}/{port} in {role} did not start"
        assert proc.stdout.readline().strip() == "ready"

    def connect(self, role: str, proto: str, host: str, port: int) -> str:
        """What the listener saw as our address, or 'error: …'."""
        # The far host speaks from its own address, not the router's.
        source = {"up": FAR6 if ":" in host else FAR}.get(role, "")
        result = self.run(role, sys.executable, "-c", CLIENT, proto, host, str(port),
                          str(TIMEOUT), source, check=False)
        return result.stdout.strip()

    def ping(self, role: str, host: str) -> bool:
        source = ["-I", FAR6 if ":" in host else FAR] if role == "up" else []
        return self.run(role, "ping", "-n", "-q", "-c", "1", "-W", "2", *source, host,
                        check=False).returncode == 0

    def nft(self) -> Nft:
        return Nft(prefix=("ip", "netns", "exec", self.ns("host")))

    def stop(self) -> None:
        for proc in self.procs:  # only what this topology started, by PID
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def build(topo: Topology) -> None:
    for name in topo.names:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    for role in ("up", "host", "test", "web"):
        topo.ip(role, "link", "set", "lo", "up")
    host = topo.ns("host")
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        topo.run("host", "sysctl", "-q", "-w", key)
    # Open vSwitch does not hand bridged frames to nftables; neither should this bridge.
    topo.run("host", "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
             "net.bridge.bridge-nf-call-ip6tables=0", check=False)

    # provider router + far host <-> the host's external side (named like the bridge)
    topo.ip("up", "link", "add", "gw0", "type", "veth", "peer", "name", "br-ex", "netns", host)
    topo.ip("up", "addr", "add", "192.0.2.1/24", "dev", "gw0")
    topo.ip("up", "addr", "add", "2001:db8:151:7307::1/64", "dev", "gw0", "nodad")
    topo.ip("up", "addr", "add", f"{FAR}/32", "dev", "lo")
    topo.ip("up", "addr", "add", f"{FAR6}/128", "dev", "lo")
    topo.ip("up", "link", "set", "gw0", "up")
    # Routed IPv6, like Hetzner: the containers' addresses are routed to the host.
    topo.ip("up", "-6", "route", "add", "2001:db8:151:7307:1::/80", "via",
            "2001:db8:151:7307::2")
    topo.ip("host", "addr", "add", f"{PUBLIC}/24", "dev", "br-ex")
    topo.ip("host", "addr", "add", "2001:db8:151:7307::2/64", "dev", "br-ex", "nodad")
    topo.ip("host", "link", "set", "br-ex", "up")
    topo.ip("host", "route", "add", "default", "via", "192.0.2.1")
    topo.ip("host", "-6", "route", "add", "default", "via", "2001:db8:151:7307::1")

    # the internal bridge with the two containers
    topo.ip("host", "link", "add", "br-int", "type", "bridge")
    topo.ip("host", "addr", "add", "10.1.0.1/16", "dev", "br-int")
    topo.ip("host", "addr", "add", "fe80::1/64", "dev", "br-int", "nodad")
    topo.ip("host", "link", "set", "br-int", "up")
    for role, v4, v6 in (("test", TEST, TEST6), ("web", WEB, "2001:db8:151:7307:1::2")):
        topo.ip("host", "link", "add", f"v-{role}", "type", "veth", "peer", "name", "eth0",
                "address", MACS[role], "netns", topo.ns(role))
        topo.ip("host", "link", "set", f"v-{role}", "master", "br-int", "up")
        topo.ip(role, "addr", "add", f"{v4}/16", "dev", "eth0")
        topo.ip(role, "addr", "add", f"{v6}/128", "dev", "eth0", "nodad")
        topo.ip(role, "link", "set", "eth0", "up")
        topo.ip(role, "route", "add", "default", "via", "10.1.0.1")
        topo.ip(role, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
        topo.ip("host", "-6", "route", "add", f"{v6}/128", "dev", "br-int")


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    t = Topology(secrets.token_hex(3))
    try:  # stop() removes whatever build() got to, even when it fails half-way
        build(t)
        t.listen("up", "tcp", 7000)
        t.listen("up", "tcp", 7001)
        t.listen("test", "tcp", 80)
        t.listen("test", "tcp", 81)
        t.listen("test", "udp", 53)
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    path = tmp_path_factory.mktemp("config") / "fjord.yaml"
    path.write_text(CONFIG)
    return load(str(path))


@pytest.fixture
def ctx(topo: Topology, desired: Desired, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """A context whose nft runs in the host namespace, with an empty fjord state."""
    monkeypatch.setattr(environment, "_current", environment.Environment(state_dir=tmp_path))
    context = Context(desired=desired)
    context.drivers["nft"] = topo.nft()
    yield context
    topo.run("host", "nft", "flush", "ruleset")  # the host namespace is ours: start clean


def converge(ctx: Context) -> None:
    ctx.refresh()  # a new run: the driver's reads of an earlier one are forgotten
    resource = Firewall(Ruleset.from_desired(ctx.desired))
    for change in resource.changes(ctx):
        change.run(ctx)
    assert resource.changes(ctx) == [], "a second look must find nothing to do"


# --- the tests -------------------------------------------------------------------------------


def test_without_fjords_table_containers_cannot_reach_the_world(topo: Topology,
                                                               ctx: Context) -> None:
    # The control experiment: no NAT, so the far host's replies have no way back.
    assert not topo.ping("test", FAR)


def test_masquerade_far_host_sees_the_public_address(topo: Topology, ctx: Context) -> None:
    converge(ctx)
    assert topo.ping("test", FAR)
    assert topo.connect("test", "tcp", FAR, 7000) == PUBLIC


def test_port_forward_tcp_and_udp_reach_the_container(topo: Topology, ctx: Context) -> None:
    converge(ctx)
    # The container sees the far host's real address (no source NAT from outside).
    assert topo.connect("up", "tcp", PUBLIC, 8080) == FAR
    assert topo.connect("up", "udp", PUBLIC, 5300) == FAR


def test_undeclared_container_port_is_unreachable(topo: Topology, ctx: Context) -> None:
    # A neighbour routing the private network straight at the host: without fjord's
    # table it reaches any port of the container (the control), with it only DNATed
    # connections to a declared target port pass, and the rest is counted.
    topo.ip("up", "route", "replace", "10.1.0.0/16", "via", PUBLIC)
    try:
        assert topo.connect("up", "tcp", TEST, 81) == FAR
        converge(ctx)
        assert topo.connect("up", "tcp", TEST, 81).startswith("error")
        assert topo.connect("up", "tcp", TEST, 80).startswith("error")
        assert topo.connect("up", "tcp", PUBLIC, 81).startswith("error")
    finally:
        topo.ip("up", "route", "del", "10.1.0.0/16")
    listing = topo.run("host", "nft", "list", "chain", "inet", "fjord", "forward").stdout
    [dropped] = [line for line in listing.splitlines() if "undeclared" in line]
    assert "counter packets 0 " not in dropped


def test_hairpin_container_reaches_a_port_forward_on_the_public_address(
        topo: Topology, ctx: Context) -> None:
    converge(ctx)
    # Masqueraded to the host's internal address, so the reply returns through the host.
    assert topo.connect("web", "tcp", PUBLIC, 8080) == "10.1.0.1"
    assert topo.connect("test", "tcp", PUBLIC, 8080) == "10.1.0.1"  # to itself


def test_the_host_itself_reaches_a_port_forward(topo: Topology, ctx: Context) -> None:
    converge(ctx)
    assert topo.connect("host", "tcp", PUBLIC, 8080) == PUBLIC


def test_ipv6_containers_go_out_and_answer_ping_but_expose_no_port(topo: Topology,
                                                                   ctx: Context) -> None:
    converge(ctx)
    assert topo.connect("test", "tcp", FAR6, 7000) == TEST6
    assert topo.ping("up", TEST6)
    assert topo.connect("up", "tcp", TEST6, 80).startswith("error")


def test_loading_twice_changes_nothing(topo: Topology, ctx: Context) -> None:
    converge(ctx)
    before = tables(topo)
    plan = make_plan([Firewall(Ruleset.from_desired(ctx.desired))], ctx)
    assert plan.empty and plan.unchanged
    assert tables(topo) == before  # same table handle: it was not reloaded


def test_the_file_loaded_twice_gives_the_same_table(topo: Topology, ctx: Context) -> None:
    text = Ruleset.from_desired(ctx.desired).render()
    nft = topo.nft()
    nft.load(text)
    first = nft.list_table("inet", "fjord")
    nft.load(text)
    assert nft.list_table("inet", "fjord") == first


def test_drift_is_detected_and_repaired(topo: Topology, ctx: Context) -> None:
    converge(ctx)
    topo.run("host", "nft", "add", "rule", "inet", "fjord", "forward", "tcp", "dport", "81",
             "accept")
    ctx.refresh()  # the next plan reads the host again (a new fjord run)
    [change] = Firewall(Ruleset.from_desired(ctx.desired)).changes(ctx)
    assert change.detail.endswith("changed outside fjord since it was loaded")
    # plan -v: the live table against the declared one, both as nft lists them (the
    # declared one loaded in a throwaway namespace): the added rule and nothing else
    diff = change.diff_text() or ""
    changed = [line for line in diff.splitlines()
               if line[:1] in ("+", "-") and not line.startswith(("+++", "---"))]
    assert changed == ["-\t\ttcp dport 81 accept"], diff
    converge(ctx)


def test_other_tables_are_left_alone(topo: Topology, ctx: Context) -> None:
    topo.run("host", "nft", "add", "table", "ip", "mine")
    topo.run("host", "nft", "add", "chain", "ip", "mine", "c")
    topo.run("host", "nft", "add", "rule", "ip", "mine", "c", "counter")
    converge(ctx)
    assert topo.run("host", "nft", "-s", "list", "table", "ip", "mine").stdout.count("counter")


def test_foreign_forward_drop_policy_is_reported_and_the_fix_works(topo: Topology,
                                                                   ctx: Context) -> None:
    converge(ctx)
    ipt = ("iptables-nft",)
    if not shutil.which(ipt[0]):
        pytest.skip("iptables-nft is not installed")
    topo.run("host", *ipt, "-N", "DOCKER-USER")
    topo.run("host", *ipt, "-P", "FORWARD", "DROP")
    topo.run("host", *ipt, "-A", "FORWARD", "-j", "DOCKER-USER")
    assert not topo.ping("test", FAR), "a foreign forward drop policy breaks the containers"
    ctx.refresh()  # each plan below is a new fjord run, which reads the host again
    plan = make_plan([Firewall(Ruleset.from_desired(ctx.desired))], ctx)
    assert plan.empty
    [warning] = plan.warnings
    assert "table ip filter, chain FORWARD has policy drop" in warning
    # The fix the warning gives, as docs/firewall.md describes it.
    topo.run("host", *ipt, "-I", "DOCKER-USER", "-i", "br-int", "-j", "ACCEPT")
    topo.run("host", *ipt, "-I", "DOCKER-USER", "-o", "br-int", "-j", "ACCEPT")
    assert topo.ping("test", FAR)
    ctx.warnings.clear()
    ctx.refresh()
    assert make_plan([Firewall(Ruleset.from_desired(ctx.desired))], ctx).warnings == []


def test_boot_hook_loads_once_and_never_fails_the_interface(topo: Topology, ctx: Context,
                                                            tmp_path: Path) -> None:
    ruleset = tmp_path / "firewall.nft"
    ruleset.write_text(Ruleset.from_desired(ctx.desired).render())
    hook = tmp_path / "fjord-firewall"
    hook.write_text(firewall.boot_hook((replace(firewall.FORWARD, file=ruleset),)))
    assert topo.run("host", "sh", str(hook)).returncode == 0
    loaded = tables(topo)
    assert ("inet", "fjord") in loaded
    assert topo.run("host", "sh", str(hook)).returncode == 0
    assert tables(topo) == loaded  # second interface: not loaded again
    assert topo.ping("test", FAR)

    topo.run("host", "nft", "delete", "table", "inet", "fjord")
    ruleset.write_text("table inet fjord {\n\tthis is not nft\n}\n")
    result = topo.run("host", "sh", str(hook), check=False)
    assert result.returncode == 0 and "fjord-firewall: loading" in result.stderr


def tables(topo: Topology) -> dict[tuple[str, str], int]:
    """Tables of the host namespace with their handles (a reload gives a new handle)."""
    data = json.loads(topo.run("host", "nft", "-j", "list", "tables").stdout)
    return {(t["table"]["family"], t["table"]["name"]): t["table"]["handle"]
            for t in data["nftables"] if "table" in t}
