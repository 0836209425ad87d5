"""host.firewall on a simulated server: what someone on the Internet (the lab's far
host) notices. Before it, any port the server listens on answers; with it, a port that
is not listed does not, while the listed port, SSH (a real sshd) and ping do; the
container still reaches the world and its port forward still works (`fjord check`);
the second apply is empty; `lab reboot` brings the table back from the boot hook, before
the uplink comes up; removing the key removes it. And the guard: while sshd listens on
a port the table would drop, the plan refuses and nothing changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults import ALL, EXAMPLE, FJORD, ROOT, apply, checks, fjord, plan

from fjord.lab import Lab

pytestmark = pytest.mark.lab

PUBLIC4, PUBLIC6 = "192.0.2.5", "2001:db8:151:7307::2"
OPEN, CLOSED, UDP = 8080, 8081, 5353
FIREWALL = f"  firewall:\n    tcp: [{OPEN}, 22]\n    udp: [{UDP}]\n"
TABLE = ["nft", "list", "table", "inet", "fjord-input"]

# Answers each TCP connection with a word, so the far host knows it got through.
LISTENER = ("import socket, sys\n"
            "s = socket.create_server(('::', int(sys.argv[1])), family=socket.AF_INET6, "
            "dualstack_ipv6=True)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.sendall(b'hello\\n'); c.close()\n")
# What the far host reads from PORT of the server (the first line), or why not.
CLIENT = ("import socket, sys\n"
          "try:\n"
          "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
          "    print(c.recv(64).decode(errors='replace').splitlines()[0])\n"
          "except OSError as exc:\n"
          "    print(f'error: {exc}')\n")


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(examples/lab.yaml with host.firewall, the example itself); the images the example
    needs built on the machine (cached)."""
    d = tmp_path_factory.mktemp("input-firewall")
    with_fw = d / "firewall.yaml"
    with_fw.write_text(Path(EXAMPLE).read_text().replace("  packages:", FIREWALL + "  packages:",
                                                         1))
    subprocess.run([*FJORD, "image", "build", "-c", EXAMPLE, "--for-labs"], check=True,
                   cwd=ROOT, capture_output=True, timeout=1800)
    return str(with_fw), EXAMPLE


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this test starts on the server; each ended (by its PID) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def listen(lab: Lab, started: list[subprocess.Popen[bytes]], port: int) -> None:
    proc = subprocess.Popen(lab.exec_argv([sys.executable, "-c", LISTENER, str(port)]),
                            stdout=subprocess.PIPE)
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def sshd(lab: Lab, started: list[subprocess.Popen[bytes]], port: int, d: Path) -> None:
    """A real OpenSSH server on the server's ``port`` (a throwaway host key)."""
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")],
                   check=True)
    (d / "sshd_config").write_text(
        f"Port {port}\nHostKey {d / 'host_key'}\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nStrictModes no\nPidFile none\n")
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen(lab.exec_argv(["/usr/sbin/sshd", "-D", "-e", "-f",
                                               str(d / "sshd_config")]),
                                stdout=subprocess.DEVNULL, stderr=log)
    started.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if f":{port} " in lab.exec(["ss", "-Htln"]).stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"sshd never listened on {port}: {(d / 'sshd.log').read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


def reads(lab: Lab, port: int, address: str = PUBLIC4) -> str:
    """What the far host ("the Internet") reads from the server's ``port``."""
    return lab.far([sys.executable, "-c", CLIENT, address, str(port)], timeout=30
                   ).stdout.strip()


def pings(lab: Lab, address: str) -> bool:
    argv = ["ping", "-6" if ":" in address else "-4", "-c1", "-W2", "-q", address]
    return any(lab.far(argv, check=False, timeout=10).ok for _ in range(3))


def test_the_host_takes_only_what_is_listed_keeps_ssh_and_its_containers(
        configs: tuple[str, str], make_lab: Callable[..., Lab],
        started: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    with_fw, without = configs
    lab = make_lab()
    apply(lab, without, ALL)
    for port in (OPEN, CLOSED):
        listen(lab, started, port)
    # nothing filters the host's own ports yet: both answer the Internet
    assert reads(lab, OPEN) == reads(lab, CLOSED) == "hello"

    # sshd on a port the table would drop: refused before anything changes
    sshd(lab, started, 2200, tmp_path / "ssh2200")
    refused = fjord(lab, "apply", "-c", with_fw, "--yes", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "host.firewall would drop tcp/2200, where sshd listens" in refused.stderr
    assert "add 2200 to host.firewall.tcp" in refused.stderr
    assert not lab.exec(TABLE, check=False).ok
    assert reads(lab, CLOSED) == "hello"
    stop(started.pop())

    sshd(lab, started, 22, tmp_path / "ssh22")
    changes = apply(lab, with_fw, ALL)
    assert [c["resource"] for c in changes] == ["input-firewall inet fjord-input",
                                                "file /etc/fjord/input.nft"]
    assert reads(lab, OPEN) == "hello"
    assert reads(lab, OPEN, PUBLIC6) == "hello"
    assert reads(lab, 22).startswith("SSH-2.0-")
    assert reads(lab, CLOSED).startswith("error: ")  # dropped: timed out
    assert reads(lab, CLOSED, PUBLIC6).startswith("error: ")
    assert pings(lab, PUBLIC4) and pings(lab, PUBLIC6)
    # the container still reaches the world, its port forward still works, and the
    # tables are loaded as declared
    results, failed = checks(lab, with_fw, prefixes=("",))
    assert not failed, failed
    names = {r["name"] for r in results}
    assert {"host: input firewall loaded", "forward tcp/2222 -> test:22"} <= names
    assert apply(lab, with_fw, ALL) == []

    # the boot hook (if-pre-up.d, run by the boot's `ifup -a`) loads it again, before the
    # interfaces come up: before the uplink's own pre-up line loads the uplink guard
    # (tables get increasing handles)
    report = lab.reboot()
    assert report.ok, report.to_json()
    assert "fjord-input" in lab.exec(TABLE).stdout
    handles = {(t["table"]["family"], t["table"]["name"]): t["table"]["handle"]
               for t in json.loads(lab.exec(["nft", "-j", "list", "tables"]).stdout)["nftables"]
               if "table" in t}
    assert (handles[("inet", "fjord")] < handles[("inet", "fjord-input")]
            < handles[("netdev", "fjord-uplink")])
    assert plan(lab, with_fw)["changes"] == []
    listen(lab, started, CLOSED)
    assert reads(lab, CLOSED).startswith("error: ")
    assert pings(lab, PUBLIC4) and pings(lab, PUBLIC6)

    # without the key: the table and its file go, the port answers again
    changes = apply(lab, without)
    assert [(c["resource"], c["action"]) for c in changes] == [
        ("input-firewall inet fjord-input", "delete"), ("file /etc/fjord/input.nft", "delete")]
    assert not lab.exec(TABLE, check=False).ok
    assert not lab.exec(["test", "-e", "/etc/fjord/input.nft"], check=False).ok
    assert reads(lab, CLOSED) == "hello"
    assert apply(lab, without) == []
