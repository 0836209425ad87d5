"""Tools inside a container show the container's truth (issue 16, item 5): `free`, `ps`,
`top` and `uptime` work and see the container's 512 MiB and its own uptime, in an
unprivileged container (`test`) and a privileged one (`web`), through the host's lxcfs
(fjord.containers.limits: fjord-init binds its files over /proc). Without lxcfs a
container still boots, its tools still work (with the host's numbers) and `fjord check`
says so; after `lab reboot` lxcfs starts before libvirtd's containers."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faults
import pytest
from faults import fjord

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
NAMES = ("test", "web")
LXCFS_LINE = "limit-aware /proc (lxcfs)"
STOP_LXCFS = "from fjord.lab.services import LabServiceManager; LabServiceManager().stop('lxcfs')"


def config() -> str:
    text = EXAMPLE.read_text()
    assert "  memory: 512MiB\n" in text
    return text + "  web: {privileged: true}\n"


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    faults.build_images(config())
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
                 input=config())
        fjord(lab, "apply", "--yes")
        yield lab
    finally:
        lab.down()


def inside(lab: Lab, name: str, command: str) -> subprocess.CompletedProcess[str]:
    """``sh -c COMMAND`` as root in the container (`fjord container exec`)."""
    return fjord(lab, "container", "exec", name, "--", "sh", "-c", command, check=False)


def free_total_mib(lab: Lab, name: str) -> int:
    out = inside(lab, name, "free -m")
    assert out.returncode == 0, out.stdout + out.stderr
    (mem,) = [line.split() for line in out.stdout.splitlines() if line.startswith("Mem:")]
    return int(mem[1])


def lxcfs_line(lab: Lab, name: str) -> tuple[bool, str]:
    out = fjord(lab, "check", "--json", check=False)
    checks = json.loads(out.stdout)["checks"]
    (line,) = [c for c in checks if c["name"] == f"container {name}: {LXCFS_LINE}"]
    return line["ok"], line["detail"]


def wait_booted(lab: Lab, name: str) -> None:
    inside(lab, name, "for i in $(seq 60); do systemctl is-system-running --wait "
                      ">/dev/null 2>&1 && break; sleep 1; done")


@pytest.mark.parametrize("name", NAMES)
def test_free_ps_top_uptime_see_the_container(lab: Lab, name: str) -> None:
    total = free_total_mib(lab, name)
    assert 480 <= total <= 530, total
    for command in ("ps aux", "top -bn1", "uptime", "cat /proc/meminfo", "head /proc/meminfo"):
        out = inside(lab, name, command)
        assert out.returncode == 0 and "Unable" not in out.stdout + out.stderr, \
            (command, out.stdout, out.stderr)
    meminfo = inside(lab, name, "cat /proc/meminfo").stdout
    assert meminfo.startswith("MemTotal:         524288 kB\n"), meminfo[:200]
    assert "root" in inside(lab, name, "ps aux").stdout
    # its own uptime (since it started), not the server's
    mine = float(inside(lab, name, "cat /proc/uptime").stdout.split()[0])
    host = float(lab.exec(["cat", "/proc/uptime"]).stdout.split()[0])
    assert mine < host, (mine, host)
    stat = inside(lab, name, "cat /proc/stat").stdout
    assert stat.startswith("cpu ") and "\nbtime " in stat
    # no CPU limit in fjord (vcpus is not enforced by libvirt's LXC driver): the host's CPUs
    cpus = inside(lab, name, "grep -c ^processor /proc/cpuinfo").stdout.strip()
    assert int(cpus) == int(inside(lab, name, "nproc").stdout) >= 1
    print(f"\n{name}: free -m total {total} MiB, {cpus} CPU(s), uptime {mine:.0f} s "
          f"(server {host:.0f} s)")
    ok, detail = lxcfs_line(lab, name)
    assert ok, detail


def test_without_lxcfs_a_container_boots_its_tools_work_and_check_says_so(lab: Lab) -> None:
    lab.exec([sys.executable, "-c", STOP_LXCFS])
    try:
        fjord(lab, "container", "restart", "test")
        wait_booted(lab, "test")
        # the host's numbers, but free and ps work (libvirt's own meminfo is gone)
        assert free_total_mib(lab, "test") > 530
        for command in ("ps aux", "top -bn1"):
            out = inside(lab, "test", command)
            assert out.returncode == 0 and "Unable" not in out.stdout + out.stderr, command
        ok, detail = lxcfs_line(lab, "test")
        assert not ok and detail.startswith("lxcfs did not answer when it started"), detail
        planned = fjord(lab, "plan", check=False).stdout
        assert "start lxcfs" in planned, planned
    finally:
        fjord(lab, "apply", "--yes")
    fjord(lab, "container", "restart", "test")
    wait_booted(lab, "test")
    assert 480 <= free_total_mib(lab, "test") <= 530
    assert lxcfs_line(lab, "test")[0]


def test_after_a_reboot_lxcfs_is_there_before_the_containers(lab: Lab) -> None:
    report = lab.reboot()
    assert report.ok, json.dumps(report.to_json())
    steps = [s.name for s in report.steps]
    assert steps.index("lxcfs") < steps.index("libvirtd"), steps
    for name in NAMES:
        wait_booted(lab, name)
        assert 480 <= free_total_mib(lab, name) <= 530
        out = inside(lab, name, "ps aux && top -bn1")
        assert out.returncode == 0 and "Unable" not in out.stdout + out.stderr, out.stderr
        ok, detail = lxcfs_line(lab, name)
        assert ok, detail
