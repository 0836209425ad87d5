"""A tenant attacks its neighbour on the internal bridge (issue 14, item 4).

Two containers, `test` (the attacker, A) and `web` (the victim, B). Root in A crafts
frames in A's network namespace (raw packet socket on A's eth0, from the host with
``nsenter --net``): gratuitous ARP replies claiming B's IPv4, unsolicited neighbour
advertisements claiming B's public IPv6, datagrams to the far host with B's IPv6 as
source, and datagrams with a forged MAC. None may work: the host keeps B's MAC for B's
addresses, pings to B (from the host and from the Internet side) still reach B, and the
far host receives only what A sends as itself. Normal traffic keeps working, a second
apply is empty, and all of it still holds after A is restarted (its port comes back
with a new OpenFlow number). Without the switch's flows, the firewall alone still
drops B's IPv6 source from A.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import build_images, fjord

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
FAR4, FAR6 = "198.51.100.10", "2001:db8:ffff::10"
PORT = 9999
FORGED_MAC = "02:66:6a:6f:72:64"

# Runs in A's network namespace: sends the frames described by the JSON on stdin.
ATTACK = r"""
import json, socket, struct, sys, time
from ipaddress import ip_address

job = json.load(sys.stdin)

def mac(text):
    return bytes.fromhex(text.replace(":", ""))

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def eth(dst, src, kind, payload):
    return mac(dst) + mac(src) + struct.pack("!H", kind) + payload

def arp_reply(src_mac, claimed_ip, dst_mac, dst_ip):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac(src_mac) \
        + ip_address(claimed_ip).packed + mac(dst_mac) + ip_address(dst_ip).packed
    return eth(dst_mac, src_mac, 0x0806, body)

def ipv6(src, dst, nxt, payload, hops):
    s, d = ip_address(src).packed, ip_address(dst).packed
    if nxt in (17, 58):  # the checksum covers a pseudo-header
        pseudo = s + d + struct.pack("!I3xB", len(payload), nxt)
        at = 6 if nxt == 17 else 2
        c = csum(pseudo + payload) or 0xFFFF
        payload = payload[:at] + struct.pack("!H", c) + payload[at + 2:]
    return struct.pack("!IHBB", 6 << 28, len(payload), nxt, hops) + s + d + payload

def na(src_mac, src, dst, target):
    # unsolicited, override: "target is now at src_mac"
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip_address(target).packed \
        + struct.pack("!BB", 2, 1) + mac(src_mac)
    return ipv6(src, dst, 58, body, 255)

def udp6(src, dst, data):
    return ipv6(src, dst, 17, struct.pack("!HHHH", 40000, job["port"], 8 + len(data), 0)
                + data, 64)

def udp4(src, dst, data):
    body = struct.pack("!HHHH", 40000, job["port"], 8 + len(data), 0) + data
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 17, 0,
                       ip_address(src).packed, ip_address(dst).packed)
    head = head[:10] + struct.pack("!H", csum(head)) + head[12:]
    return head + body

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
me, gw = job["mac"], job["gateway_mac"]
for _ in range(job.get("repeat", 1)):
    for kind, args in job["frames"]:
        if kind == "arp":
            claimed = args["claim"]
            sock.send(arp_reply(me, claimed, gw, job["gateway4"]))
            sock.send(arp_reply(me, claimed, "ff:ff:ff:ff:ff:ff", claimed))
        elif kind == "na":
            src = args.get("src", job["link_local"])
            sock.send(eth(gw, me, 0x86DD, na(me, src, "fe80::1", args["claim"])))
            sock.send(eth("33:33:00:00:00:01", me, 0x86DD,
                          na(me, src, "ff02::1", args["claim"])))
        elif kind == "udp6":
            sock.send(eth(gw, args.get("mac", me), 0x86DD,
                          udp6(args["src"], args["dst"], args["data"].encode())))
        elif kind == "udp4":
            sock.send(eth(gw, args.get("mac", me), 0x0800,
                          udp4(args["src"], args["dst"], args["data"].encode())))
    time.sleep(job.get("interval", 0))
"""

# Runs on the far host: what arrives on UDP port PORT (v4 and v6) within the time given.
LISTEN = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
print("ready", flush=True)
got, end = [], time.monotonic() + float(sys.argv[2])
while (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        break
    got.append([peer[0], data.decode(errors="replace")])
print(json.dumps(got), flush=True)
"""


def config() -> str:
    return EXAMPLE.read_text() + "  web: {}\n"


def state(lab: Lab, within: float = 60) -> dict[str, dict[str, str]]:
    """Each container's MAC, addresses and init PID, as the host sees them (waits for
    containers still booting to have their addresses)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return {name: _container(lab, name) for name in ("test", "web")}
        except (KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _container(lab: Lab, name: str) -> dict[str, str]:
    pid = lab.exec([sys.executable, "-c", "import sys; from fjord.containers.offload "
                    "import init_pid; print(init_pid(sys.argv[1]))", name]).stdout.strip()
    link = lab.exec(["nsenter", f"--target={int(pid)}", "--net", "ip", "-j", "address", "show",
                     "dev", "eth0"]).stdout
    (eth0,) = json.loads(link)
    addrs = {a["family"] + a["scope"]: a["local"] for a in eth0["addr_info"]}
    return {"pid": pid, "mac": eth0["address"], "ipv4": addrs["inetglobal"],
            "ipv6": addrs["inet6global"], "link_local": addrs["inet6link"]}


def attack(lab: Lab, a: dict[str, str], frames: list, repeat: int = 1,
           interval: float = 0.0) -> None:
    gateway_mac = lab.exec(["cat", "/sys/class/net/br-int/address"]).stdout.strip()
    job = {"mac": a["mac"], "link_local": a["link_local"], "gateway_mac": gateway_mac,
           "gateway4": "10.1.0.1", "port": PORT, "frames": frames, "repeat": repeat,
           "interval": interval}
    lab.exec(["nsenter", f"--target={a['pid']}", "--net", sys.executable, "-c", ATTACK],
             input=json.dumps(job))


def neighbour(lab: Lab, address: str) -> str | None:
    out = json.loads(lab.exec(["ip", "-j", "neigh", "show", address, "dev", "br-int"]).stdout)
    return out[0].get("lladdr") if out else None


def pings(run, address: str, tries: int = 3) -> bool:
    return any(run(["ping", "-c1", "-W1", address], check=False).ok for _ in range(tries))


def far_receives(lab: Lab, a: dict[str, str], frames: list, seconds: float = 4) -> set[str]:
    """The payloads the far host receives while A sends ``frames``."""
    listener = subprocess.Popen(lab.far_argv([sys.executable, "-c", LISTEN, str(PORT),
                                              str(seconds)]),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        attack(lab, a, frames, repeat=3, interval=0.3)
        out, _ = listener.communicate(timeout=seconds + 30)
    finally:
        if listener.poll() is None:
            listener.kill()
    return {data for _, data in json.loads(out.splitlines()[-1])}


def attacks(lab: Lab) -> dict[str, object]:
    """Every attack of A on B; what an observer sees (each value True when it failed)."""
    ab = state(lab)
    a, b = ab["test"], ab["web"]
    # the host knows B's MAC for both of B's addresses
    assert pings(lab.exec, b["ipv4"]) and pings(lab.exec, b["ipv6"])
    assert neighbour(lab, b["ipv4"]) == b["mac"] and neighbour(lab, b["ipv6"]) == b["mac"]
    attack(lab, a, [["arp", {"claim": b["ipv4"]}], ["na", {"claim": b["ipv6"]}],
                    ["na", {"claim": b["ipv6"], "src": b["ipv6"]}]],
           repeat=4, interval=0.6)
    out: dict[str, object] = {
        "ARP: host keeps B's MAC": neighbour(lab, b["ipv4"]) == b["mac"],
        "ARP: host's ping reaches B": pings(lab.exec, b["ipv4"]),
        "NA: host keeps B's MAC": neighbour(lab, b["ipv6"]) == b["mac"],
        "NA: host's ping reaches B": pings(lab.exec, b["ipv6"]),
        "NA: far host's ping reaches B": pings(lab.far, b["ipv6"]),
    }
    got = far_receives(lab, a, [
        ["udp6", {"src": a["ipv6"], "dst": FAR6, "data": "A as A (v6)"}],
        ["udp6", {"src": b["ipv6"], "dst": FAR6, "data": "A as B (v6)"}],
        ["udp4", {"src": a["ipv4"], "dst": FAR4, "data": "A as A (v4)"}],
        ["udp4", {"src": a["ipv4"], "dst": FAR4, "data": "A, forged MAC (v4)",
                  "mac": FORGED_MAC}],
        ["udp6", {"src": a["ipv6"], "dst": FAR6, "data": "A, forged MAC (v6)",
                  "mac": FORGED_MAC}],
    ])
    # the listener and the raw socket work: what A sends as itself arrives
    assert {"A as A (v6)", "A as A (v4)"} <= got, got
    out["B's IPv6 as source: far never sees it"] = "A as B (v6)" not in got
    out["forged MAC: far never sees it"] = not got & {"A, forged MAC (v4)",
                                                        "A, forged MAC (v6)"}
    return out


def normal_traffic(lab: Lab) -> None:
    ab = state(lab)
    for me, peer in (("test", "web"), ("web", "test")):
        for address in (ab[peer]["ipv4"], ab[peer]["ipv6"], FAR4, FAR6):
            for _ in range(3):  # a container just started may still be resolving
                out = fjord(lab, "container", "exec", me, "--", "ping", "-c1", "-W2",
                            address, check=False)
                if out.returncode == 0:
                    break
            assert out.returncode == 0, f"{me} -> {address}: {out.stdout}{out.stderr}"


def no_changes(lab: Lab) -> None:
    out = fjord(lab, "plan")
    assert "No changes" in out.stdout, out.stdout


def test_a_tenant_cannot_take_its_neighbours_addresses_or_send_as_it(make_lab):
    build_images(config())
    lab = make_lab()
    lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
             input=config())
    fjord(lab, "apply", "--yes")
    no_changes(lab)
    normal_traffic(lab)

    seen = attacks(lab)
    assert all(seen.values()), seen

    # A's port comes back with a new name and OpenFlow number: the hook guards it again
    mac_a = state(lab)["test"]["mac"]

    def port_of_a() -> str:
        return lab.exec(["ovs-vsctl", "--columns=name,ofport", "find", "Interface",
                         f"external_ids:attached-mac=\"{mac_a}\""]).stdout

    before = port_of_a()
    fjord(lab, "container", "restart", "test")
    after = port_of_a()
    assert before != after, (before, after)
    state(lab)  # A has its addresses again
    no_changes(lab)
    normal_traffic(lab)
    seen = attacks(lab)
    assert all(seen.values()), ("after a restart of A", seen)

    # a reboot: Open vSwitch starts with an empty table, libvirt autostarts the
    # containers and its hook rebuilds the flows
    assert lab.reboot().ok
    state(lab)  # both containers are up with their addresses
    no_changes(lab)
    seen = attacks(lab)
    assert all(seen.values()), ("after a reboot", seen)


def test_the_firewall_alone_drops_a_neighbours_ipv6_source(make_lab):
    """Without the switch's flows (someone replaced them), the firewall still ties each
    public IPv6 source to its container's MAC; the plan shows the missing flows and
    apply puts them back."""
    build_images(config())
    lab = make_lab()
    lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
             input=config())
    fjord(lab, "apply", "--yes")
    lab.exec(["ovs-ofctl", "replace-flows", "br-int", "-"], input="priority=0 actions=NORMAL\n")
    ab = state(lab)
    a, b = ab["test"], ab["web"]
    got = far_receives(lab, a, [
        ["udp6", {"src": a["ipv6"], "dst": FAR6, "data": "A as A (v6)"}],
        ["udp6", {"src": b["ipv6"], "dst": FAR6, "data": "A as B (v6)"}],
    ])
    assert got == {"A as A (v6)"}, got
    planned = json.loads(fjord(lab, "plan", "--json").stdout)["changes"]
    assert "flows br-int" in [c["resource"] for c in planned], planned
    fjord(lab, "apply", "--yes")
    no_changes(lab)
    assert "priority=200,in_port=" in lab.exec(["ovs-ofctl", "dump-flows", "br-int"]).stdout
