"""Host networking in a simulated server: apply, idempotence, switchover and its
safety net, reboot, routed IPv6 with the providers, foreign firewalls, port forwards.

Until a container exists, a network namespace plugged into br-int stands in for one
(the container `test` of examples/lab.yaml: 10.1.0.2, 2001:db8:151:7307:1::1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import fjord

from fjord.lab import Lab
from fjord.runner import run

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
PUBLIC4, PUBLIC6 = "192.0.2.5", "2001:db8:151:7307::2"
CT4, CT6 = "10.1.0.2", "2001:db8:151:7307:1::1"


def apply_json(lab: Lab, config: str, *extra: str) -> list[dict]:
    out = fjord(lab, "apply", "-c", config, "--yes", "--json", "--only", "host",
                "--only", "network", *extra)
    return json.loads(out.stdout)["changes"]


def reaches(lab: Lab, address: str, tries: int = 3) -> bool:
    v6 = ":" in address
    argv = ["ping", "-6" if v6 else "-4", "-c1", "-W1", "-q", address]
    return any(lab.upstream(argv, check=False, timeout=10).ok for _ in range(tries))


def far_reaches(lab: Lab, address: str, tries: int = 3) -> bool:
    argv = ["ping", "-6" if ":" in address else "-4", "-c1", "-W1", "-q", address]
    return any(lab.far(argv, check=False, timeout=10).ok for _ in range(tries))


def variant(tmp_path: Path, name: str, **replace: str) -> str:
    text = EXAMPLE.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


TX_CSUM_OFF = """
import sys
from pyroute2 import Ethtool
e = Ethtool()
f = e.get_features(sys.argv[1])
for name in ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"):
    if name in f.features:
        f.features[name].enable = False
e.set_features(sys.argv[1], f)
"""


@pytest.fixture
def stand_in(request):
    """A network namespace on br-int with the addresses of container `test`."""
    made: list[str] = []

    def plug(lab: Lab) -> str:
        ns = f"fjord-{lab.name}-ct"
        made.append(ns)
        run(["ip", "netns", "add", ns])
        server = lab.status()["netns"]["server"]
        # the container's own MAC: the switch and the firewall tie its addresses to it
        mac = lab.exec([sys.executable, "-c", "import sys; from fjord.state.known import "
                        "load; print(load(sys.argv[1]).container('test').mac_private)",
                        str(EXAMPLE)]).stdout.strip()
        run(["ip", "-n", server, "link", "add", "ct0", "type", "veth", "peer", "name", "eth0",
             "address", mac, "netns", ns])
        lab.exec(["ovs-vsctl", "--may-exist", "add-port", "br-int", "ct0"])
        lab.exec(["ip", "link", "set", "ct0", "up"])
        for argv in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                     ["ip", "addr", "add", f"{CT4}/16", "dev", "eth0"],
                     ["ip", "-6", "addr", "add", f"{CT6}/128", "dev", "eth0", "nodad"],
                     ["ip", "route", "add", "default", "via", "10.1.0.1"],
                     ["ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"]):
            run(["ip", "netns", "exec", ns, *argv])
        # as a container on the userspace datapath: checksums computed, not offloaded
        run(["ip", "netns", "exec", ns, sys.executable, "-c", TX_CSUM_OFF, "eth0"])
        return ns

    yield plug
    for ns in made:
        run(["ip", "netns", "del", ns], check=False)


def test_apply_on_a_fresh_lab_then_nothing_to_do(make_lab):
    lab = make_lab()
    config = str(EXAMPLE)
    plan = json.loads(fjord(lab, "plan", "-c", config, "--json", "--only", "network").stdout)
    order = [c["resource"] for c in plan["changes"]]
    # the original checklist, in order: bridges, gateway address, switchover, persistence
    assert order.index("bridge br-ex") < order.index("uplink eth0")
    assert order.index("bridge br-int") < order.index("address 10.1.0.1/16 on br-int")
    assert order.index("uplink eth0") < order.index("file /etc/network/interfaces")
    assert "nftables inet fjord" in order

    changes = apply_json(lab, config)
    assert any(c["resource"] == "uplink eth0" for c in changes)
    assert reaches(lab, PUBLIC4) and reaches(lab, PUBLIC6)
    br_ex = lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout
    assert f"{PUBLIC4}/27" in br_ex and f"{PUBLIC6}/64" in br_ex
    assert PUBLIC4 not in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout
    assert "10.1.0.1/16" in lab.exec(["ip", "-br", "addr", "show", "br-int"]).stdout
    assert lab.exec(["nft", "list", "table", "inet", "fjord"], check=False).ok
    assert apply_json(lab, config) == []


def test_wrong_gateway_rolls_back_and_the_server_stays_reachable(make_lab, tmp_path):
    lab = make_lab()
    bad = variant(tmp_path, "badgw", **{"gateway: 192.0.2.1\n": "gateway: 192.0.2.30\n"})
    out = fjord(lab, "apply", "-c", bad, "--yes", "--only", "network", check=False)
    assert out.returncode == 1
    assert "rolled back" in out.stderr and "192.0.2.30 does not answer" in out.stderr
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout
    assert reaches(lab, PUBLIC4) and reaches(lab, PUBLIC6)
    assert "eth0" not in lab.exec(["ovs-vsctl", "list-ports", "br-ex"], check=False).stdout
    # with the right gateway, the next apply finishes the job
    apply_json(lab, str(EXAMPLE))
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout


def test_sigkill_during_switchover_the_guard_restores(make_lab):
    lab = make_lab()
    confirm = 5.0
    proc = subprocess.Popen(lab.exec_argv([
        *FJORD, "apply", "-c", str(EXAMPLE), "--yes", "--only", "network",
        "--confirm-timeout", str(confirm)]), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the addresses have moved
            if PUBLIC4 not in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the switchover never started")
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    while time.monotonic() - killed < 30:
        if f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout:
            break
        time.sleep(0.2)
    restored = time.monotonic() - killed
    # 8 s for moving and verifying, plus the confirmation time, plus slack
    assert restored < 8 + confirm + 3, f"restored after {restored:.1f} s"
    assert reaches(lab, PUBLIC4)
    assert "eth0" not in lab.exec(["ovs-vsctl", "list-ports", "br-ex"], check=False).stdout


def test_fjord_confirm_from_another_session_keeps_the_switchover(make_lab):
    lab = make_lab()
    proc = subprocess.Popen(lab.exec_argv([
        *FJORD, "apply", "-c", str(EXAMPLE), "--yes", "--only", "network",
        "--confirm-timeout", "30"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if fjord(lab, "confirm", check=False).returncode == 0:
            break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout
    time.sleep(1)  # the guard is gone: nothing rolls back later
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout


def test_reboot_brings_the_network_back_without_apply(make_lab, stand_in):
    lab = make_lab()
    apply_json(lab, str(EXAMPLE))
    lab.reboot()
    assert reaches(lab, PUBLIC4) and reaches(lab, PUBLIC6)
    assert lab.exec(["nft", "list", "table", "inet", "fjord"], check=False).ok
    assert "10.1.0.1/16" in lab.exec(["ip", "-br", "addr", "show", "br-int"]).stdout
    stand_in(lab)
    assert far_reaches(lab, CT6), "container IPv6 after reboot"
    assert lab.far(["true"]).ok and run(["ip", "netns", "exec", f"fjord-{lab.name}-ct", "ping",
                                          "-c1", "-W2", lab.far_ipv4], check=False).ok
    assert apply_json(lab, str(EXAMPLE)) == []


@pytest.mark.parametrize("provider", ["routed", "onlink"])
def test_routed_ipv6_reaches_the_container_without_foreign_macs(make_lab, stand_in, provider):
    lab = make_lab(provider=provider)
    apply_json(lab, str(EXAMPLE))
    ns = stand_in(lab)
    assert far_reaches(lab, CT6)
    assert run(["ip", "netns", "exec", ns, "ping", "-6", "-c1", "-W2", lab.far_ipv6],
               check=False).ok
    assert run(["ip", "netns", "exec", ns, "ping", "-4", "-c1", "-W2", lab.far_ipv4],
               check=False).ok, "IPv4 through NAT"
    assert lab.foreign_mac().packets == 0
    if provider == "onlink":
        # only proxy NDP makes it reachable: without the entry the provider cannot resolve it
        lab.exec(["ip", "-6", "neigh", "del", "proxy", CT6, "dev", "br-ex"])
        lab.upstream(["ip", "-6", "neigh", "flush", "all"])
        assert not far_reaches(lab, CT6, tries=2)
        changes = apply_json(lab, str(EXAMPLE))
        assert [c["resource"] for c in changes] == [f"proxy-ndp {CT6} on br-ex"]
        assert far_reaches(lab, CT6)


def test_a_foreign_forward_drop_policy_is_reported_by_plan(make_lab):
    lab = make_lab()
    apply_json(lab, str(EXAMPLE))
    lab.exec(["nft", "-f", "-"], input=(
        "table ip filter {\n chain FORWARD {\n  type filter hook forward priority 0; "
        "policy drop;\n }\n}\n"))
    plan = json.loads(fjord(lab, "plan", "-c", str(EXAMPLE), "--json", "--only",
                            "network").stdout)
    assert any("filter" in w and "drop" in w for w in plan.get("warnings", [])), plan


def test_port_forward_reaches_the_private_side(make_lab, stand_in):
    lab = make_lab()
    apply_json(lab, str(EXAMPLE))
    ns = stand_in(lab)
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('0.0.0.0',22));s.listen();s.settimeout(20);c,a=s.accept();"
         "c.sendall(b'hello from '+a[0].encode());c.close()"])
    try:
        time.sleep(0.3)
        out = lab.far([sys.executable, "-c",
                       "import socket;s=socket.create_connection(('192.0.2.5',2222),timeout=5);"
                       "print(s.recv(100).decode())"], timeout=15)
        assert out.stdout.startswith("hello from ")
        assert lab.far_ipv4 in out.stdout, "the container sees the real client address"
    finally:
        server.kill()
        server.wait()


def test_a_moved_private_network_leaves_no_old_gateway(make_lab, tmp_path):
    """host.private moves: the new gateway address goes on br-int and the old one comes
    off (it would still answer, and route, for a network nobody declares)."""
    lab = make_lab()
    apply_json(lab, str(EXAMPLE))
    moved = variant(tmp_path, "moved", **{"address: 10.1.0.1/16": "address: 10.2.0.1/16",
                                          "ipv4: 10.1.0.2": "ipv4: 10.2.0.2"})
    changes = {(c["resource"], c["action"]) for c in apply_json(lab, moved)}
    assert ("address 10.1.0.1/16 on br-int", "delete") in changes, changes
    br_int = lab.exec(["ip", "-br", "-4", "addr", "show", "br-int"]).stdout
    assert "10.2.0.1/16" in br_int and "10.1.0.1" not in br_int, br_int
    assert apply_json(lab, moved) == []
    # and back
    apply_json(lab, str(EXAMPLE))
    br_int = lab.exec(["ip", "-br", "-4", "addr", "show", "br-int"]).stdout
    assert "10.1.0.1/16" in br_int and "10.2.0.1" not in br_int, br_int
