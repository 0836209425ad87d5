"""Reboots: after `fjord lab reboot`, every declared thing comes back from the server's
own files, without an apply — bridges and their ports, addresses, routes, the nft tables
(NAT, port forwards, forward policy, uplink guard), proxy NDP entries, the forwarding
sysctls, and the containers marked autostart, with their data — several times in a row
(3 in CI, 10 with FJORD_FULL_FAULTS=1).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults import (
    ALL,
    EXAMPLE,
    FJORD,
    FULL,
    ROOT,
    apply,
    checks,
    fjord,
    fjord_state,
    inventory,
    plan,
    record,
)

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REBOOTS = 10 if FULL else 3
# examples/lab.yaml's container `test` (port forward 2222 -> 22), a second one with
# allocated addresses, and one that must not start at boot.
CONFIG = Path(EXAMPLE).read_text() + "  web: {}\n  idle: {autostart: false}\n"
RUNNING = ("test", "web")
IDLE = {"rootfs idle", "container idle"}  # its root is mounted when it starts
CT6 = "2001:db8:151:7307:1::1"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The configuration, with its images built on the machine (cached)."""
    path = tmp_path_factory.mktemp("reboot") / "fjord.yaml"
    path.write_text(CONFIG)
    subprocess.run([*FJORD, "image", "build", "-c", str(path), "--for-labs"], check=True,
                   cwd=ROOT, capture_output=True, timeout=1800)
    return str(path)


def settle(lab: Lab, config: str, timeout: float = 90) -> list[dict[str, Any]]:
    """Until `fjord check` passes for everything but the container that does not start
    at boot (containers boot in parallel on a loaded machine); the failures left."""
    deadline = time.monotonic() + timeout
    while True:
        _, failed = checks(lab, config, prefixes=("",))
        failed = [f for f in failed if not f["name"].startswith("container idle:")]
        if not failed or time.monotonic() > deadline:
            return failed
        time.sleep(2)


def checksum(lab: Lab, name: str) -> str:
    out = fjord(lab, "container", "exec", name, "--", "sha256sum",
                "/root/precious")
    return out.stdout.split()[0]


def banner(lab: Lab) -> str:
    """What the far host reads from the port forward 192.0.2.5:2222 (test's sshd)."""
    out = lab.far([sys.executable, "-c",
                   "import socket;s=socket.create_connection(('192.0.2.5',2222),timeout=5);"
                   "print(s.recv(64).decode(errors='replace'))"], check=False, timeout=20)
    return out.stdout.strip()


def test_everything_declared_comes_back_after_each_reboot(
        config: str, make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    apply(lab, config, ALL)
    # data in each container: a random megabyte and its checksum; `idle` gets one too
    sums = {}
    for name in (*RUNNING, "idle"):
        fjord(lab, "container", "exec", name, "--", "sh", "-c",
              "head -c 1048576 /dev/urandom > /root/precious && sync")
        sums[name] = checksum(lab, name)
    assert not settle(lab, config)
    before = inventory(lab)
    assert set(before["domains"]) == {"test", "web", "idle"}
    # `idle` (autostart: false) runs now because apply started it; after a boot it stays
    # off, as declared
    expected = {**before, "domains": {**before["domains"], "idle": "shut off"}}
    idle_upper = fjord_state(lab) / "containers" / "idle" / "upper" / "root" / "precious"
    for n in range(1, REBOOTS + 1):
        start = time.monotonic()
        report = lab.reboot()
        assert report.ok, f"reboot {n}: {json.dumps(report.to_json())}"
        failed = settle(lab, config)
        took = time.monotonic() - start
        assert not failed, f"reboot {n}: fjord check: {failed}"
        after = inventory(lab)
        diff = {k: (expected[k], after[k]) for k in expected if expected[k] != after.get(k)}
        assert not diff, f"reboot {n}: not as before:\n{json.dumps(diff, indent=1)}"
        assert banner(lab).startswith("SSH-2.0-"), f"reboot {n}: port forward"
        assert lab.far(["ping", "-6", "-c1", "-W2", CT6], check=False).ok, f"reboot {n}: IPv6"
        for name in RUNNING:
            assert checksum(lab, name) == sums[name], f"reboot {n}: {name}'s data"
        idle_sum = hashlib.sha256(idle_upper.read_bytes()).hexdigest()
        assert idle_sum == sums["idle"], f"reboot {n}: idle's data"
        # nothing to do but mount and start the container that does not start at boot
        left = {c["resource"] for c in plan(lab, config, ALL)["changes"]}
        assert left <= IDLE, f"reboot {n}: planned {left}"
        record("reboots.survived", detail=f"reboot {n}: back in {took:.1f} s")
        record("data.files_checked_after_reboot", 3)
        print(f"reboot {n}: everything back in {took:.1f} s")
    changes = apply(lab, config, ALL)
    assert {c["resource"] for c in changes} <= IDLE, changes
