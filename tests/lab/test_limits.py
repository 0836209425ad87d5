"""Limits are real (issue 6): on the lab's cgroup v1 layout, a process in a container
cannot allocate past the container's declared memory, and a container sees and can
touch only its own cgroups. Two containers of 64 MiB from examples/lab.yaml's host in
one lab; the last test shows what happens without fjord-init (and that the check says
so)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faults
import pytest
from faults import inside

from fjord.config.models import BUILT_IN
from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
LIMIT = 64 << 20
ALLOCATE = "head -c 200M /dev/zero | tail >/dev/null"  # tail holds the one "line": 200 MiB

# Prints the container's memory cgroup numbers (its libvirt cgroup, as the lab sees it).
NUMBERS = """
import json, sys
from fjord.containers.limits import cgroup_dir, running
c = running(sys.argv[1])
d = cgroup_dir("memory", c.groups["memory"])
print(json.dumps({"path": c.groups["memory"], **{k: int((d / f"memory.{k}").read_text())
      for k in ("limit_in_bytes", "max_usage_in_bytes", "failcnt", "usage_in_bytes")}}))
"""
VERDICTS = """
import json, sys
from fjord.containers.limits import cgroups_private, limits_enforced
print(json.dumps({"limits": limits_enforced(sys.argv[1], expected=int(sys.argv[2])),
                  "private": cgroups_private(sys.argv[1])}))
"""


def config() -> str:
    text = EXAMPLE.read_text().replace("  memory: 512MiB\n", "  memory: 64MiB\n")
    assert "memory: 64MiB" in text
    # web privileged: the last test shows the escape fjord-init prevents, which only a
    # privileged container can make (an unprivileged one cannot write outside its cgroup)
    return text + "  web: {privileged: true}\n"


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    """One lab for the module: both containers applied with 64 MiB."""
    faults.build_images(config())
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
                 input=config())
        out = subprocess.run(lab.exec_argv([*FJORD, "apply", "--yes"]), capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        yield lab
    finally:
        lab.down()



def numbers(lab: Lab, name: str) -> dict[str, int | str]:
    return json.loads(lab.exec([sys.executable, "-c", NUMBERS, name]).stdout)


def verdicts(lab: Lab, name: str) -> dict[str, list[object]]:
    return json.loads(lab.exec([sys.executable, "-c", VERDICTS, name, str(LIMIT)]).stdout)


def test_a_service_cannot_allocate_past_the_declared_memory(lab: Lab) -> None:
    before = numbers(lab, "test")
    assert before["limit_in_bytes"] == LIMIT
    unit = f"[Service]\nType=oneshot\nExecStart=/bin/sh -c '{ALLOCATE}'\n"
    inside(lab, "test", f"printf %s \"{unit}\" > /run/systemd/system/alloc.service && "
                        "systemctl daemon-reload")
    started = inside(lab, "test", "systemctl start alloc.service", check=False)
    assert started.returncode != 0  # the OOM killer took the allocation
    after = numbers(lab, "test")
    assert after["max_usage_in_bytes"] <= LIMIT
    assert after["failcnt"] > before["failcnt"]
    journal = inside(lab, "test", "journalctl -u alloc.service --no-pager -q").stdout
    assert "status=137" in journal or "Killed" in journal, journal
    print(f"\nservice: limit {LIMIT >> 20} MiB, asked 200 MiB, peak "
          f"{after['max_usage_in_bytes'] / (1 << 20):.1f} MiB, failcnt {after['failcnt']}")


def test_a_command_entered_from_the_host_is_limited_too(lab: Lab) -> None:
    before = numbers(lab, "web")
    out = inside(lab, "web", ALLOCATE + '; echo "tail: $?"', join=True, check=False)
    assert "tail: 0" not in out.stdout, out.stdout  # 137: killed (or the shell with it)
    after = numbers(lab, "web")
    assert after["max_usage_in_bytes"] <= LIMIT and after["failcnt"] > before["failcnt"]
    print(f"\nentered command: {out.stdout.strip()}, peak "
          f"{after['max_usage_in_bytes'] / (1 << 20):.1f} MiB, failcnt {after['failcnt']}")


def test_every_process_is_inside_its_limit_and_the_check_says_so(lab: Lab) -> None:
    for name in ("test", "web"):
        v = verdicts(lab, name)
        assert v["limits"][0], v
        assert v["private"][0], v
    # nothing of a container landed at the lab server's roots: only libvirt's partition
    listing = lab.exec(["find", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids",
                        "/sys/fs/cgroup/systemd", "-mindepth", "1", "-maxdepth", "1",
                        "-type", "d"]).stdout.split()
    assert {Path(p).name for p in listing} == {"machine"}, listing


def test_a_container_sees_only_its_own_cgroups(lab: Lab) -> None:
    web = str(numbers(lab, "web")["path"])
    test = str(numbers(lab, "test")["path"])
    assert inside(lab, "test", "grep :memory: /proc/1/cgroup").stdout.strip().endswith(
        ":memory:/init.scope")
    seen = inside(lab, "test", "ls /sys/fs/cgroup/memory").stdout.split()
    assert "system.slice" in seen and "init.scope" in seen
    assert "machine" not in seen
    # the other container's cgroup (and libvirt's partition) are nowhere in sight, not
    # even through a fresh mount of the hierarchy: the namespace's root is its own cgroup
    assert inside(lab, "test", f"find /sys/fs/cgroup -name {Path(web).name}").stdout == ""
    fresh = inside(lab, "test", "mkdir -p /run/probe && mount -t cgroup -o memory cgroup "
                   "/run/probe && ls /run/probe; umount /run/probe").stdout.split()
    assert "machine" not in fresh and "system.slice" in fresh
    # and nothing outside its own cgroup can be made or removed
    assert inside(lab, "test", "mkdir /sys/fs/cgroup/memory/../escape", check=False
                  ).returncode != 0
    assert inside(lab, "test", f"rmdir /sys/fs/cgroup/memory{web}", check=False
                  ).returncode != 0
    assert lab.exec(["test", "-d", f"/sys/fs/cgroup/memory{web}"]).ok
    assert lab.exec(["test", "-d", f"/sys/fs/cgroup/memory{test}/system.slice"]).ok


def test_without_fjord_init_systemd_escapes_and_the_check_says_so(lab: Lab) -> None:
    """The root cause, kept measurable: web redefined with /sbin/init as its init."""
    xml = lab.exec(["virsh", "-c", "lxc:///", "dumpxml", "web"]).stdout
    assert "<init>/usr/local/sbin/fjord-init</init>" in xml
    plain = xml.replace("<init>/usr/local/sbin/fjord-init</init>", "<init>/sbin/init</init>")
    lab.exec(["virsh", "-q", "-c", "lxc:///", "destroy", "web"])
    lab.exec(["sh", "-c", "cat > /run/web.xml && virsh -q -c lxc:/// define /run/web.xml"],
             input=plain)
    started = lab.exec(["virsh", "-q", "-c", "lxc:///", "start", "web"], check=False)
    if BUILT_IN["suite"] != "bookworm":
        # trixie's systemd (257) refuses the lab's cgroup v1 hierarchies outright: as its
        # own init, the container does not even boot (fjord-init is what lets it)
        for _ in range(100):
            state = lab.exec(["virsh", "-c", "lxc:///", "domstate", "web"]).stdout.strip()
            if state != "running":
                break
            time.sleep(0.1)
        assert not started.ok or state != "running", (started.stderr, state)
        assert not lab.exec(["test", "-d", "/sys/fs/cgroup/memory/system.slice"],
                            check=False).ok
        return
    assert started.ok, started.stderr
    inside(lab, "web", "for i in $(seq 50); do systemctl is-system-running --wait "
                       ">/dev/null 2>&1 && break; sleep 0.1; done", check=False)
    v = verdicts(lab, "web")
    assert not v["limits"][0] and "outside its memory cgroup" in str(v["limits"][1]), v
    assert not v["private"][0] and "no cgroup namespace" in str(v["private"][1]), v
    # the services went to the lab server's root of the memory hierarchy
    assert lab.exec(["test", "-d", "/sys/fs/cgroup/memory/system.slice"]).ok
    # what fjord-init made for web's earlier start (pids, name=systemd) was released by
    # the libvirt hook when that start ended: nothing is left for release() to remove
    removed = lab.exec([sys.executable, "-c", "from fjord.containers.limits import release; "
                        "print(len(release('web')))"]).stdout
    assert int(removed) == 0
    assert lab.exec(["sh", "-c", "ls -d /sys/fs/cgroup/pids/machine/*web.libvirt-lxc"],
                    check=False).stdout == ""
