"""Containers in a simulated server: two containers from examples/lab.yaml's host, each
booting systemd, reaching the world, taking the owner's key; idempotence, redefinition,
removal without --prune, reboot, lifecycle commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faults
import pytest
from faults import fjord

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]


def two_containers(key: str, memory: str = "512MiB", with_web: bool = True) -> str:
    """examples/lab.yaml with the owner's key, Puppet for every container (one image),
    and a second container `web` whose addresses are allocated."""
    text = EXAMPLE.read_text()
    text = text.replace("\ndefaults:\n", f"\ndefaults:\n  ssh_keys: [{key!r}]\n"
                        "  puppet: {server: tromso.example.net}\n", 1)
    text = text.replace("  memory: 512MiB\n", f"  memory: {memory}\n")
    if with_web:
        text += "  web: {}\n"
    return text


@pytest.fixture(scope="module")
def images() -> None:
    """The image, built on the machine into the cache every lab shares (cached)."""
    faults.build_images(two_containers(faults.SAMPLE_KEY))


@pytest.fixture
def host(images, make_lab):
    """A lab with the owner's SSH key and a way to write the server's configuration."""
    lab = make_lab()
    lab.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/id_ed25519"])
    key = lab.exec(["cat", "/root/.ssh/id_ed25519.pub"]).stdout.strip()

    def configure(text: str) -> None:
        lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
                 input=text)

    return lab, key, configure


def answers(lab: Lab, address: str, within: float = 20) -> bool:
    """The container answers ping from the host within ``within`` seconds of a start."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if lab.exec(["ping", "-c1", "-W1", address], check=False).ok:
            return True
    return False


def checks(lab: Lab) -> dict[str, dict]:
    out = fjord(lab, "check", "--json", check=False)
    return {c["name"]: c for c in json.loads(out.stdout)["checks"]}


def test_two_containers_boot_reach_the_world_and_take_the_owners_key(host):
    lab, key, configure = host
    configure(two_containers(key))
    changes = json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"]
    resources = {c["resource"] for c in changes}
    assert {"container test", "container web", "domain test", "domain web"} <= resources
    results = checks(lab)
    failed = {n: c["detail"] for n, c in results.items() if not c["ok"]}
    assert not failed, failed
    for name in ("test", "web"):
        for what in ("systemd running", "ssh with the configured key",
                     "password login refused", "reaches 198.51.100.10 over IPv4 (NAT)",
                     "reaches 2001:db8:ffff::10 over IPv6", "resolves far.example.org"):
            assert results[f"container {name}: {what}"]["ok"]
    # no failed unit at all, in either container
    for name in ("test", "web"):
        out = fjord(lab, "container", "exec", name, "--", "systemctl", "--failed",
                    "--no-legend", "--plain")
        assert out.stdout.strip() == "", out.stdout
    # the host resolves the containers by name, and they resolve each other and reach
    # each other by name (over the internal bridge)
    assert lab.exec(["getent", "hosts", "web"]).ok
    listed = json.loads(fjord(lab, "container", "list", "--json").stdout)["containers"]
    ipv4 = {c["name"]: c["ipv4"] for c in listed}
    for name, peer in (("test", "web"), ("web", "test")):
        got = fjord(lab, "container", "exec", name, "--", "getent", "ahostsv4", peer)
        assert got.stdout.split()[0] == ipv4[peer], got.stdout
        ping = fjord(lab, "container", "exec", name, "--", "ping", "-c1", "-W2", peer,
                     check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    # a second apply changes nothing
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_a_changed_memory_limit_redefines_the_domain(host):
    lab, key, configure = host
    configure(two_containers(key, with_web=False))
    fjord(lab, "apply", "--yes")
    configure(two_containers(key, memory="1GiB", with_web=False))
    plan = fjord(lab, "plan", "-v").stdout
    assert "redefine test: memory: 512 MiB -> 1 GiB" in plan, plan
    assert "<memory unit=" in plan or "memory" in plan  # the XML diff is shown with -v
    fjord(lab, "apply", "--yes")
    xml = lab.exec(["virsh", "-c", "lxc:///", "dumpxml", "test"]).stdout
    assert "<memory unit='KiB'>1048576</memory>" in xml
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_a_container_removed_from_the_file_is_kept_until_prune(host):
    lab, key, configure = host
    configure(two_containers(key))
    fjord(lab, "apply", "--yes")
    marker = ["sh", "-c", "echo precious > /root/data"]
    fjord(lab, "container", "exec", "web", "--", *marker)
    configure(two_containers(key, with_web=False))
    plan = json.loads(fjord(lab, "plan", "--json").stdout)
    assert any("web is not in the file" in w for w in plan.get("warnings", [])), plan
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []
    out = fjord(lab, "container", "exec", "web", "--", "cat", "/root/data")
    assert out.stdout.strip() == "precious"
    # destroying needs an explicit flag, and --prune does it
    refused = fjord(lab, "container", "destroy", "web", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    changes = json.loads(fjord(lab, "apply", "--yes", "--json", "--prune").stdout)["changes"]
    assert [c["action"] for c in changes if c["resource"] == "container web"] == ["delete"]
    listing = json.loads(fjord(lab, "container", "list", "--json").stdout)["containers"]
    assert [c["name"] for c in listing] == ["test"]


def test_containers_come_back_after_reboot_without_apply(host):
    lab, key, configure = host
    configure(two_containers(key))
    fjord(lab, "apply", "--yes")
    lab.reboot()
    results = checks(lab)
    failed = {n: c["detail"] for n, c in results.items() if not c["ok"]}
    assert not failed, failed
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_lifecycle_commands(host):
    lab, key, configure = host
    configure(two_containers(key, with_web=False))
    fjord(lab, "apply", "--yes")
    assert fjord(lab, "container", "exec", "test", "--", "sh", "-c", "exit 7",
                 check=False).returncode == 7
    fjord(lab, "container", "stop", "test")
    listing = json.loads(fjord(lab, "container", "list", "--json").stdout)["containers"]
    assert listing[0]["state"] == "stopped"
    plan = json.loads(fjord(lab, "plan", "--json").stdout)["changes"]
    assert [c["resource"] for c in plan] == ["container test"]
    fjord(lab, "container", "start", "test")
    assert answers(lab, "10.1.0.2")
    fjord(lab, "container", "restart", "test")
    assert answers(lab, "10.1.0.2")
    fjord(lab, "container", "destroy", "test", "--yes")
    assert lab.exec(["virsh", "-c", "lxc:///", "list", "--all", "--name"]).stdout.strip() == ""
    # the file still declares it: the next apply recreates it
    fjord(lab, "apply", "--yes")
    assert answers(lab, "10.1.0.2")
