"""A container's root user cannot stall or crash fjord, nor keep a raised limit (issue 14,
items 5 and 6).

Acting as the tenant does: root inside container "test" (its namespaces, entered with
nsenter from the lab's server), it plants in its own root what fjord reads there:

- a FIFO at /etc/hostname (an open for reading used to wait for a writer forever), a
  directory symbolic link at /root/.ssh, a non-UTF-8 byte in /etc/shadow and
  /etc/hosts, a 200 MB (sparse) /etc/hosts: `plan` and `status` finish and name
  container test; `apply` converges the other container ("web": a key declared for it
  is written) and the host, and exits non-zero naming test; once the files are fixed,
  one apply converges everything and the next has nothing to do;
- its own memory limit raised from 512 MiB to 2 GiB, by writing its cgroup's
  memory.limit_in_bytes from inside the container (the lab is cgroup v1; fjord-init
  mounts the container's own cgroup at /sys/fs/cgroup/memory, writable): `plan` shows
  the drift, `apply` restores 512 MiB, the next apply has nothing to do.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faults
import pytest

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
DECLARED = 512 << 20
TIMEOUT = 120  # generous: plan takes seconds; a FIFO used to make it wait forever
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx5Vbq3+W1S2bUhN3mAJ1C2mrwLqmF9G3zfLwXbCzqJ "
       "web-only@example.net")

# The container's memory limit, from its cgroup's file as the lab server sees it (v1).
LIMIT = """
import sys
from fjord.containers.limits import cgroup_dir, running
c = running(sys.argv[1])
print((cgroup_dir("memory", c.groups["memory"]) / "memory.limit_in_bytes").read_text())
"""


def config(web_key: bool = False) -> str:
    web = f"  web:\n    ssh_keys: [{KEY!r}]\n" if web_key else "  web: {}\n"
    return EXAMPLE.read_text() + web


def declare(lab: Lab, text: str) -> None:
    lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"], input=text)


def fjord(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(lab.exec_argv([*FJORD, *args]), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    return out


def inside(lab: Lab, name: str, command: str) -> str:
    """``command`` as root on the host inside container ``name``'s namespaces and root:
    the worst case of a tenant (it can even write its own cgroup limits)."""
    return faults.inside(lab, name, command, host_root=True).stdout


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    faults.build_images(config())
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        declare(lab, config())
        out = fjord(lab, "apply", "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        yield lab
    finally:
        lab.down()


def both(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout + out.stderr


def test_a_fifo_or_a_link_in_one_root_stops_only_that_container(lab: Lab) -> None:
    inside(lab, "test", "rm /etc/hostname && mkfifo /etc/hostname")
    declare(lab, config(web_key=True))  # a change for the other container
    plan = fjord(lab, "plan")
    assert plan.returncode == 0, both(plan)
    assert "cannot read rootfs test" in plan.stdout and "a FIFO" in plan.stdout, both(plan)
    assert "customise web: /root/.ssh/authorized_keys" in plan.stdout, both(plan)

    status = fjord(lab, "status")
    assert status.returncode != 0 and "rootfs test" in status.stdout, both(status)
    assert "a FIFO" in status.stdout, both(status)

    applied = fjord(lab, "apply", "--yes")
    assert applied.returncode == 1, both(applied)
    assert "rootfs test: cannot read its state" in applied.stderr, both(applied)
    assert "a FIFO" in applied.stderr, both(applied)
    assert KEY in inside(lab, "web", "cat /root/.ssh/authorized_keys")
    # the apply lock was released: the next apply runs (and says the same)
    again = fjord(lab, "apply", "--yes")
    assert again.returncode != 0 and "rootfs test" in both(again), both(again)

    # a planted directory link: refused for this container, as before, and only for it
    inside(lab, "test", "rm /etc/hostname && echo test > /etc/hostname && "
                        "mv /root/.ssh /root/.ssh.real && ln -s /tmp /root/.ssh")
    plan = fjord(lab, "plan")
    assert "cannot read rootfs test" in plan.stdout and "symbolic link" in plan.stdout, \
        both(plan)
    inside(lab, "test", "rm /root/.ssh && mv /root/.ssh.real /root/.ssh")


def test_bytes_that_are_not_utf8_are_drift_not_a_crash(lab: Lab) -> None:
    inside(lab, "test", r"printf 'nobody2:\377\376:1::::::\n' >> /etc/shadow && "
                        r"printf '10.9.9.9\tcaf\351\n' >> /etc/hosts")
    plan = fjord(lab, "plan")
    assert plan.returncode == 0, both(plan)
    assert "customise test: /etc/hosts" in plan.stdout, both(plan)
    assert "cannot read" not in plan.stdout, both(plan)
    applied = fjord(lab, "apply", "--yes")
    assert applied.returncode == 0, both(applied)
    # fjord's /etc/hosts back; the tenant's own shadow line kept, byte for byte
    assert "caf" not in inside(lab, "test", "cat /etc/hosts")
    assert inside(lab, "test", r"grep -c '^nobody2:' /etc/shadow").strip() == "1"


def test_a_huge_file_is_refused_without_being_read(lab: Lab) -> None:
    inside(lab, "test", "truncate -s 200M /etc/hosts")
    plan = fjord(lab, "plan")
    assert "cannot read rootfs test" in plan.stdout and "too large" in plan.stdout, both(plan)
    applied = fjord(lab, "apply", "--yes")
    assert applied.returncode != 0 and "too large" in both(applied), both(applied)

    # the tenant (or the operator) fixes its files: one apply converges, the next is empty
    inside(lab, "test", "rm /etc/hosts")
    applied = fjord(lab, "apply", "--yes")
    assert applied.returncode == 0, both(applied)
    again = fjord(lab, "apply", "--yes")
    assert again.returncode == 0 and "No changes" in again.stdout, both(again)
    assert "test" in inside(lab, "test", "cat /etc/hosts")


def live_limit(lab: Lab, name: str) -> int:
    return int(lab.exec([sys.executable, "-c", LIMIT, name]).stdout)


def test_a_limit_raised_from_inside_is_restored(lab: Lab) -> None:
    assert live_limit(lab, "test") == DECLARED
    # as the tenant: its own cgroup is the root of /sys/fs/cgroup/memory it sees
    inside(lab, "test", f"echo {2 << 30} > /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert live_limit(lab, "test") == 2 << 30
    plan = fjord(lab, "plan")
    assert "restore the memory limit of test" in plan.stdout, both(plan)
    assert "2048 MiB" in plan.stdout, both(plan)
    applied = fjord(lab, "apply", "--yes")
    assert applied.returncode == 0, both(applied)
    assert live_limit(lab, "test") == DECLARED
    again = fjord(lab, "apply", "--yes")
    assert again.returncode == 0 and "No changes" in again.stdout, both(again)
