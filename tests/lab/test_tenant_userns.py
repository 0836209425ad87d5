"""Unprivileged containers (issue 14, item 1): by default a container runs in a user
namespace of its own, its root being a range of 65536 host ids no other container
holds. Two containers from examples/lab.yaml's host in one lab: what their root can no
longer do to the host, that they still work (systemd, ssh, ping, restart), that the
ranges stay apart across destroy and create, and that `privileged: true` is said."""

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

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
STATE = "/var/lib/fjord/containers"
SSH = ["ssh", "-i", "/root/.ssh/id_ed25519", "-o", "StrictHostKeyChecking=no",
       "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def config(key: str, extra: str = "") -> str:
    text = EXAMPLE.read_text().replace(
        "\ndefaults:\n", f"\ndefaults:\n  ssh_keys: [{key!r}]\n", 1)
    return text + "  web: {}\n" + extra


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[tuple[Lab, str]]:
    faults.build_images(config(faults.SAMPLE_KEY))
    lab = Lab("u" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        lab.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/id_ed25519"])
        key = lab.exec(["cat", "/root/.ssh/id_ed25519.pub"]).stdout.strip()
        configure(lab, config(key))
        out = fj(lab, "apply", "--yes")
        assert "unprivileged" in out.stdout, out.stdout
        yield lab, key
    finally:
        lab.down()


def configure(lab: Lab, text: str) -> None:
    lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"], input=text)


def fj(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(lab.exec_argv([*FJORD, *args]), capture_output=True, text=True,
                         timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"fjord {' '.join(args)} -> {out.returncode}\n"
                             f"{out.stdout}{out.stderr}")
    return out


def inside(lab: Lab, name: str, command: str, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    return fj(lab, "container", "exec", name, "--", "sh", "-c", command, check=check)


def uid_map(lab: Lab, name: str) -> tuple[int, int, int]:
    first = inside(lab, name, "cat /proc/self/uid_map").stdout.split()
    return int(first[0]), int(first[1]), int(first[2])


def owner(lab: Lab, path: str) -> tuple[int, int]:
    out = lab.exec(["stat", "-c", "%u %g", path]).stdout.split()
    return int(out[0]), int(out[1])


def record(lab: Lab, name: str) -> dict:
    return json.loads(lab.exec(["cat", f"{STATE}/{name}/container.json"]).stdout)


def systemd_running(lab: Lab, name: str) -> str:
    return inside(lab, name, "systemctl is-system-running --wait", check=False).stdout.strip()


def test_each_container_has_its_own_range_and_owns_its_files(lab):
    lab, _ = lab
    maps = {name: uid_map(lab, name) for name in ("test", "web")}
    for name, (inner, outer, count) in maps.items():
        assert (inner, count) == (0, 65536), maps
        assert outer >= 1_000_000_000, maps  # above every /etc/subuid range useradd gives
        assert record(lab, name)["idmap"] == outer
        gid = inside(lab, name, "cat /proc/self/gid_map").stdout.split()
        assert gid == ["0", str(outer), "65536"], gid
    (a, b) = sorted(outer for _, outer, _ in maps.values())
    assert a + 65536 <= b, maps  # disjoint
    for name, (_, n, _) in maps.items():
        root = f"{STATE}/{name}/rootfs"
        # what fjord wrote, and the image's files as the container sees them
        for path in ("/etc/ssh/ssh_host_ed25519_key", "/root/.ssh/authorized_keys",
                     "/root/.ssh", "/etc/machine-id", "/etc/hostname",
                     "/usr/local/sbin/fjord-init", "/usr/bin/ls"):
            assert owner(lab, root + path) == (n, n), path
        assert owner(lab, root + "/etc/shadow") == (n, n + 42)  # group shadow
        # and in the upper layer, where the container's own files are
        assert owner(lab, f"{STATE}/{name}/upper/etc/ssh/ssh_host_ed25519_key") == (n, n)
        # a file root makes inside is the range's first id on the host
        inside(lab, name, "echo x > /root/made-inside")
        assert owner(lab, root + "/root/made-inside") == (n, n)
        # inside, its files are root's
        assert inside(lab, name, "stat -c '%u %g' /etc/shadow /root/.ssh"
                      ).stdout.split() == ["0", "42", "0", "0"]


def test_systemd_ssh_ping_and_apt_work(lab):
    lab, _ = lab
    for name, address in (("test", "10.1.0.2"), ("web", None)):
        assert systemd_running(lab, name) == "running"
        failed = inside(lab, name, "systemctl --failed --no-legend --plain").stdout
        assert failed.strip() == "", failed
        assert inside(lab, name, "ping -c1 -W2 10.1.0.1", check=False).returncode == 0
        assert inside(lab, name, "ping -c1 -W2 198.51.100.10", check=False).returncode == 0
        assert inside(lab, name, "apt-get -q -o Debug::NoLocking=1 check",
                      check=False).returncode == 0
        if address:
            out = lab.exec([*SSH, f"root@{address}", "id -u; cat /proc/self/uid_map"])
            words = out.stdout.split()
            assert words[0] == "0" and words[1:3] == ["0", str(record(lab, name)["idmap"])]
    checks = json.loads(fj(lab, "check", "--json", check=False).stdout)["checks"]
    failed = {c["name"]: c["detail"] for c in checks if not c["ok"]}
    assert not failed, failed


def test_root_inside_cannot_touch_what_the_host_owns(lab):
    lab, _ = lab
    limit = inside(lab, "test", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout
    # its own memory limit: the cgroup is delegated, its limits are not
    raise_ = inside(lab, "test", "echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
                    check=False)
    assert raise_.returncode != 0
    assert inside(lab, "test", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
                  ).stdout == limit
    # the host's kernel settings, even with /proc/sys remounted writable (the value
    # written back is the one there: on a privileged container this write succeeds)
    escape = inside(lab, "test", "mount -o remount,rw /proc/sys 2>/dev/null; "
                    "v=$(cat /proc/sys/kernel/printk_ratelimit) && "
                    "echo $v > /proc/sys/kernel/printk_ratelimit", check=False)
    assert escape.returncode != 0, escape.stdout
    # a device node of the host's disk
    assert inside(lab, "test", "mknod /root/disk b 8 0", check=False).returncode != 0
    # the host's files through PID 1's root: PID 1 is the container's own init
    assert inside(lab, "test", "ls /proc/1/root/var/lib/fjord 2>/dev/null",
                  check=False).returncode != 0
    # files of the host that root inside reaches are not its own: nobody's, read-only
    probe = inside(lab, "test", "stat -c %u /sys/fs/cgroup/memory/memory.limit_in_bytes "
                   "/proc/sys/kernel/printk_ratelimit").stdout.split()
    assert probe == ["65534", "65534"], probe


def test_second_apply_is_empty_and_a_restart_keeps_working(lab):
    lab, _ = lab
    assert json.loads(fj(lab, "apply", "--yes", "--json").stdout)["changes"] == []
    before = uid_map(lab, "web")
    fj(lab, "container", "restart", "web")
    assert systemd_running(lab, "web") == "running"
    assert uid_map(lab, "web") == before
    assert json.loads(fj(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_destroy_and_create_reuses_no_range_of_a_living_container(lab):
    lab, key = lab
    web = record(lab, "web")["idmap"]
    old = record(lab, "test")["idmap"]
    fj(lab, "container", "destroy", "--yes", "test")
    configure(lab, config(key, "  db: {}\n"))
    fj(lab, "apply", "--yes")
    ranges = {name: record(lab, name)["idmap"] for name in ("test", "web", "db")}
    assert ranges["web"] == web
    assert len(set(ranges.values())) == 3, ranges
    starts = sorted(ranges.values())
    assert all(a + 65536 <= b for a, b in zip(starts, starts[1:], strict=False)), ranges
    assert old in ranges.values()  # the destroyed one's range is free again
    for name, n in ranges.items():
        assert uid_map(lab, name) == (0, n, 65536)
        assert systemd_running(lab, name) == "running"
    assert json.loads(fj(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_privileged_is_said_and_not_converted_in_place(lab):
    lab, key = lab
    configure(lab, config(key, "  db: {}\n  priv: {privileged: true}\n"))
    plan = fj(lab, "plan", check=False)
    out = plan.stdout + plan.stderr
    assert "container priv is privileged" in out, out
    assert "root of priv: overlay over image" in out and "privileged, customised" in out
    # an existing unprivileged container asked to become privileged is kept as it is
    configure(lab, config(key, "  db: {privileged: true}\n"))
    plan = fj(lab, "plan", check=False)
    out = plan.stdout + plan.stderr
    assert "container db was made unprivileged" in out, out
    assert "db" not in "".join(line for line in out.splitlines()
                               if "redefine" in line)
    configure(lab, config(key, "  db: {}\n"))


def test_a_privileged_container_becomes_unprivileged_with_its_data(lab):
    lab, key = lab
    configure(lab, config(key, "  priv: {privileged: true}\n"))
    fj(lab, "apply", "--yes")
    assert uid_map(lab, "priv") == (0, 0, 4294967295)
    inside(lab, "priv", "echo precious > /root/data && chmod 600 /root/data")
    configure(lab, config(key, "  priv: {}\n"))
    plan = fj(lab, "plan").stdout
    assert "make priv unprivileged" in plan, plan
    fj(lab, "apply", "--yes")
    n = record(lab, "priv")["idmap"]
    others = [record(lab, name)["idmap"] for name in ("test", "web")]
    assert n >= 1_000_000_000 and n not in others
    assert uid_map(lab, "priv") == (0, n, 65536)
    assert inside(lab, "priv", "cat /root/data; stat -c '%u %a' /root/data"
                  ).stdout.split() == ["precious", "0", "600"]
    assert owner(lab, f"{STATE}/priv/upper/root/data") == (n, n)
    assert systemd_running(lab, "priv") == "running"
    assert json.loads(fj(lab, "apply", "--yes", "--json").stdout)["changes"] == []
