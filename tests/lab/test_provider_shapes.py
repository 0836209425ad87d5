"""Provider shapes beyond a plain on-link network: Hetzner Cloud's IPv4, a /32 whose
gateway is outside it, on the link (lab provider `hetzner-cloud`, examples/hetzner-cloud.yaml:
192.0.2.10/32, gateway 203.0.113.1; the router has only 203.0.113.1/32 on the link and
an on-link route to the server's /32).

A network namespace on br-int stands in for the container `test` (10.1.0.2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import fjord

from fjord.lab import Lab
from fjord.runner import run

pytestmark = pytest.mark.lab

HETZNER = Path(__file__).resolve().parents[2] / "examples" / "hetzner-cloud.yaml"
PUBLIC4, GATEWAY4 = "192.0.2.10", "203.0.113.1"
CT4 = "10.1.0.2"


def apply_json(lab: Lab, config: str) -> list[dict]:
    out = fjord(lab, "apply", "-c", config, "--yes", "--json", "--only", "host",
                "--only", "network")
    return json.loads(out.stdout)["changes"]


def without_containers(tmp_path: Path) -> str:
    """examples/hetzner-cloud.yaml without its container (and so its forward): what
    `fjord check` can pass on before any container is built."""
    text = HETZNER.read_text()
    text = re.sub(r"\n  forwards:\n(    - .*\n)+", "\n", text)
    text = text[:text.index("\ncontainers:")] + "\ncontainers: {}\n"
    path = tmp_path / "hetzner-nocontainers.yaml"
    path.write_text(text)
    return str(path)


def routes4(lab: Lab) -> set[str]:
    """The server's IPv4 main-table routes, as `ip route` says them (proto left out)."""
    out = lab.exec(["ip", "-4", "route", "show", "table", "main"]).stdout
    return {re.sub(r" proto \S+", "", line.strip()) for line in out.splitlines() if line}


def stand_in(lab: Lab) -> str:
    ns = f"fjord-{lab.name}-ct"
    run(["ip", "netns", "add", ns])
    server = lab.status()["netns"]["server"]
    run(["ip", "-n", server, "link", "add", "ct0", "type", "veth", "peer", "name", "eth0",
         "netns", ns])
    lab.exec(["ovs-vsctl", "--may-exist", "add-port", "br-int", "ct0"])
    lab.exec(["ip", "link", "set", "ct0", "up"])
    for argv in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                 ["ip", "addr", "add", f"{CT4}/16", "dev", "eth0"],
                 ["ip", "route", "add", "default", "via", "10.1.0.1"]):
        run(["ip", "netns", "exec", ns, *argv])
    # as a container on the userspace datapath: checksums computed, not offloaded
    run(["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"], check=False)
    return ns


@pytest.fixture
def hetzner(make_lab) -> Lab:  # type: ignore[no-untyped-def]
    return make_lab(provider="hetzner-cloud", config=str(HETZNER))


def test_hetzner_cloud_32_with_an_on_link_gateway(hetzner: Lab, tmp_path: Path) -> None:
    lab = hetzner
    config = without_containers(tmp_path)
    # the installer's state: Hetzner's pointopoint setup on the NIC
    eth0 = lab.exec(["ip", "-4", "addr", "show", "eth0"]).stdout
    assert f"inet {PUBLIC4} peer {GATEWAY4}/32" in eth0
    assert lab.upstream(["ping", "-c1", "-W2", PUBLIC4], check=False).ok

    # the switchover under a ping from the far side
    pinger = subprocess.Popen(lab.far_argv(["ping", "-n", "-i", "0.05", "-W", "1", PUBLIC4]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        changes = apply_json(lab, config)
        time.sleep(0.5)
    finally:
        pinger.send_signal(2)
        out, _ = pinger.communicate(timeout=10)
    assert any(c["resource"] == "uplink eth0" for c in changes)
    sent, got = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    print(f"far -> {PUBLIC4} during the switchover: {sent - got} of {sent} lost")
    assert got > 0 and sent - got <= 10, out

    # br-ex: the /32, a link route to the gateway and the default route via it
    assert f"{PUBLIC4}/32" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout
    assert PUBLIC4 not in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout
    applied = routes4(lab)
    assert f"{GATEWAY4} dev br-ex scope link" in applied, applied
    assert f"default via {GATEWAY4} dev br-ex onlink" in applied, applied
    assert not any(r.startswith(GATEWAY4) and "dev eth0" in r for r in applied), applied

    # NAT: the stand-in container reaches the far host behind the host's /32
    ns = stand_in(lab)
    try:
        assert run(["ip", "netns", "exec", ns, "ping", "-4", "-c1", "-W2", lab.far_ipv4],
                   check=False).ok
        # the second apply plans nothing
        assert apply_json(lab, config) == []
    finally:
        run(["ip", "netns", "del", ns], check=False)

    # a reboot comes back from /etc/network/interfaces alone, with the same routes
    lab.reboot()
    assert lab.upstream(["ping", "-c1", "-W2", PUBLIC4], check=False).ok
    assert routes4(lab) == applied
    assert apply_json(lab, config) == []
    out = fjord(lab, "check", "-c", config, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "IPv4 gateway answers" in out.stdout


def test_hetzner_cloud_port_forward_and_rollback(hetzner: Lab, tmp_path: Path) -> None:
    lab = hetzner
    # a wrong on-link gateway rolls back to the installer's /32 and its peer route
    bad = tmp_path / "badgw.yaml"
    bad.write_text(HETZNER.read_text().replace(f"gateway: {GATEWAY4} ", "gateway: 203.0.113.9 "))
    out = fjord(lab, "apply", "-c", str(bad), "--yes", "--only", "network", check=False)
    assert out.returncode == 1 and "rolled back" in out.stderr, out.stderr
    assert f"{PUBLIC4}/32" in lab.exec(["ip", "-br", "addr", "show", "eth0"]).stdout
    assert lab.upstream(["ping", "-c1", "-W2", PUBLIC4], check=False).ok
    assert f"default via {GATEWAY4} dev eth0" in lab.exec(["ip", "-4", "route"]).stdout

    apply_json(lab, str(HETZNER))
    ns = stand_in(lab)
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('0.0.0.0',22));s.listen();s.settimeout(20);c,a=s.accept();"
         "c.sendall(b'hello from '+a[0].encode());c.close()"])
    try:
        time.sleep(0.3)
        out = lab.far([sys.executable, "-c",
                       f"import socket;s=socket.create_connection(('{PUBLIC4}',2222),timeout=5);"
                       "print(s.recv(100).decode())"], timeout=15)
        assert out.stdout.startswith("hello from ")
        assert lab.far_ipv4 in out.stdout, "the container sees the real client address"
    finally:
        server.kill()
        server.wait()
        run(["ip", "netns", "del", ns], check=False)


def test_cloud_init_managing_the_uplink_makes_plan_refuse(hetzner: Lab, tmp_path: Path) -> None:
    """Hetzner's images come with cloud-init, which rewrites the network at boot: plan
    and apply refuse, say what to disable, and change nothing."""
    lab = hetzner
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "cloud.cfg").write_text("datasource_list: [Hetzner, None]\n")
    (seed / "50-cloud-init").write_text("auto eth0\niface eth0 inet dhcp\n")
    (seed / "99-disable-network-config.cfg").write_text("network: {config: disabled}\n")
    seed.chmod(0o755)
    lab.exec(["install", "-D", "-m", "644", str(seed / "cloud.cfg"), "/etc/cloud/cloud.cfg"])
    lab.exec(["install", "-D", "-m", "644", str(seed / "50-cloud-init"),
              "/etc/network/interfaces.d/50-cloud-init"])
    before = (lab.exec(["ip", "-4", "addr"]).stdout, lab.exec(["ip", "-4", "route"]).stdout,
              lab.exec(["cat", "/etc/network/interfaces"]).stdout)

    for args in (["plan"], ["apply", "--yes"]):
        out = fjord(lab, *args, "-c", str(HETZNER), check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "another network manager configures eth0" in out.stderr
        assert "cloud-init" in out.stderr
        assert "network: {config: disabled}" in out.stderr
        assert "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg" in out.stderr
    assert (lab.exec(["ip", "-4", "addr"]).stdout, lab.exec(["ip", "-4", "route"]).stdout,
            lab.exec(["cat", "/etc/network/interfaces"]).stdout) == before
    assert not lab.exec(["ovs-vsctl", "br-exists", "br-ex"], check=False).ok
    assert not lab.exec(["test", "-e", "/etc/sysctl.d/60-fjord.conf"], check=False).ok

    # done as the message says: plan goes ahead
    lab.exec(["install", "-D", "-m", "644", str(seed / "99-disable-network-config.cfg"),
              "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg"])
    lab.exec(["rm", "/etc/network/interfaces.d/50-cloud-init"])
    out = fjord(lab, "plan", "-c", str(HETZNER), "--only", "network", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_machines_network_managers_are_not_the_servers(lab: Lab) -> None:
    """A lab on a cloud image (cloud-init, netplan, networkd files on the machine: CI's
    own machine may be one) starts with none of them: its /etc directories are empty,
    and fjord's plan, which refuses another manager of the uplink, plans the network."""
    for directory in ("/etc/cloud", "/etc/netplan", "/etc/systemd/network"):
        listed = lab.exec(["sh", "-c", f"ls -A {directory} 2>/dev/null || true"]).stdout
        assert listed.strip() == "", (directory, listed)
