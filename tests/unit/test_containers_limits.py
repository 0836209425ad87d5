"""Container limits: fjord-init's script, and the readings behind `limits_enforced` and
`cgroups_private` on a fake /proc, /run and /sys/fs/cgroup (the v1 layout the lab
measured: libvirt's cgroup /machine/lxc-PID-NAME.libvirt-lxc)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fjord.containers import limits
from fjord.containers.limits import (
    cgroups_private,
    enter_cgroups,
    init_script,
    limits_enforced,
    parse_proc_cgroup,
    release,
)

OWN = "/machine/lxc-560-test.libvirt-lxc"
HIERARCHIES = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
               "name=systemd")
MOUNTINFO = "".join(
    f"{30 + i} 23 0:{29 + i} / /sys/fs/cgroup/{h.removeprefix('name=')} rw,relatime - "
    f"cgroup cgroup rw,{h}\n" for i, h in enumerate(HIERARCHIES))


def cgroup_file(paths: dict[str, str]) -> str:
    """/proc/PID/cgroup with ``paths`` per hierarchy (default: libvirt's cgroup, except
    pids and name=systemd, which libvirt leaves at /)."""
    lines = []
    for i, h in enumerate(reversed(HIERARCHIES)):
        default = "/" if h in ("pids", "name=systemd") else OWN
        lines.append(f"{len(HIERARCHIES) - i}:{h}:{paths.get(h, default)}")
    return "\n".join([*lines, "0::/"]) + "\n"


class FakeHost:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc/self").mkdir(parents=True)
        (root / "proc/self/mountinfo").write_text(MOUNTINFO)
        (root / limits.LXC_RUN).mkdir(parents=True)
        self.memory = root / "sys/fs/cgroup/memory" / OWN.lstrip("/")
        self.memory.mkdir(parents=True)
        self.numbers(512 << 20, 23 << 20, 30 << 20)

    def numbers(self, limit: int, usage: int, peak: int) -> None:
        for name, value in (("limit_in_bytes", limit), ("usage_in_bytes", usage),
                            ("max_usage_in_bytes", peak)):
            (self.memory / f"memory.{name}").write_text(f"{value}\n")

    def process(self, pid: int, comm: str, cgroup: str, pidns: str = "4026533001",
                cgroupns: str = "4026533100", children: tuple[int, ...] = ()) -> None:
        d = self.root / "proc" / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "cgroup").write_text(cgroup)
        (d / "comm").write_text(comm + "\n")
        (d / "ns/pid").symlink_to(f"pid:[{pidns}]")
        (d / "ns/cgroup").symlink_to(f"cgroup:[{cgroupns}]")
        (d / "task" / str(pid) / "children").write_text(" ".join(map(str, children)))

    def container(self, services: dict[str, str], *, cgroupns: str = "4026533200") -> None:
        """libvirt_lxc (PID 560, the host's namespaces) and the container: init 561 and one
        process per service, in the cgroups given ({comm: memory path})."""
        (self.root / limits.LXC_RUN / "test.pid").write_text("560\n")
        self.process(560, "libvirt_lxc", cgroup_file({}), pidns="4026531836",
                     children=(561,))
        self.process(561, "systemd", cgroup_file({"memory": OWN + "/init.scope"}),
                     cgroupns=cgroupns)
        for pid, (comm, path) in enumerate(services.items(), start=600):
            self.process(pid, comm, cgroup_file({"memory": path}), cgroupns=cgroupns)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def test_processes_inside_their_cgroup_with_a_limit_are_enforced(host):
    host.container({"sshd": OWN + "/system.slice/ssh.service",
                    "systemd-journal": OWN + "/system.slice/systemd-journald.service"})
    ok, detail = limits_enforced("test", root=host.root)
    assert ok, detail
    assert detail == f"all 3 processes in {OWN}: limit 512 MiB, using 23 MiB (peak 30 MiB)"
    assert limits_enforced("test", expected=512 << 20, root=host.root)[0]


def test_services_systemd_moved_to_the_root_are_reported(host):
    """What the lab measured before fjord-init: systemd's services at /system.slice."""
    host.container({"sshd": "/system.slice/ssh.service", "agetty": OWN})
    ok, detail = limits_enforced("test", root=host.root)
    assert not ok
    assert detail == (f"1 of 3 processes are outside its memory cgroup {OWN}, where the "
                      "limit does not apply: 600 sshd in /system.slice/ssh.service")


def test_a_cgroup_without_limit_or_with_another_limit_fails(host):
    host.container({})
    assert not limits_enforced("test", expected=1 << 30, root=host.root)[0]
    host.numbers((1 << 63) - 4096, 1, 1)  # v1's "no limit"
    ok, detail = limits_enforced("test", root=host.root)
    assert not ok and detail == f"its memory cgroup {OWN} has no limit"


def test_a_stopped_container_is_not_enforced(host):
    assert limits_enforced("test", root=host.root) == (False, "container test is not running")
    assert not cgroups_private("test", root=host.root)[0]


def test_cgroup_namespace_of_its_own_rooted_in_its_cgroup(host):
    host.container({})
    assert cgroups_private("test", root=host.root) == (
        True, f"own cgroup namespace, rooted at {OWN}")


def test_the_hosts_cgroup_namespace_is_not_private(host):
    host.container({}, cgroupns="4026533100")  # libvirt_lxc's: no namespace of its own
    ok, detail = cgroups_private("test", root=host.root)
    assert not ok and detail.startswith("no cgroup namespace: it sees the host's whole")


def test_proc_cgroup_is_read_per_hierarchy():
    groups = parse_proc_cgroup(cgroup_file({}))
    assert groups["memory"] == OWN and groups["name=systemd"] == "/" and groups[""] == "/"
    assert limits.memory_key({"cpu,cpuacct": "/", "memory": "/x"}) == "memory"
    assert limits.memory_key({"": "/x"}) == ""
    assert limits.memory_key({"cpu": "/"}) is None


def test_enter_cgroups_writes_this_process_into_each_mounted_hierarchy(host):
    host.container({})
    for h in HIERARCHIES:
        d = host.root / "sys/fs/cgroup" / h.removeprefix("name=") / (
            "" if h in ("pids", "name=systemd") else OWN.lstrip("/") + (
                "/init.scope" if h == "memory" else ""))
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("")
    enter_cgroups(561, root=host.root)
    procs = host.root / "sys/fs/cgroup/memory" / OWN.lstrip("/") / "init.scope/cgroup.procs"
    assert procs.read_text() == str(os.getpid())
    assert (host.root / "sys/fs/cgroup/pids/cgroup.procs").read_text() == str(os.getpid())


def test_release_removes_empty_cgroups_of_earlier_starts_only(host):
    pids = host.root / "sys/fs/cgroup/pids/machine"
    for d in ("lxc-16691-test.libvirt-lxc/system.slice/ssh.service",
              "lxc-16691-test.libvirt-lxc/init.scope",
              "lxc-16692-test2.libvirt-lxc", "lxc-1-xtest.libvirt-lxc", "other"):
        (pids / d).mkdir(parents=True)
    removed = release("test", root=host.root)
    assert not (pids / "lxc-16691-test.libvirt-lxc").exists()
    assert {p.name for p in pids.iterdir()} == {"lxc-16692-test2.libvirt-lxc",
                                                "lxc-1-xtest.libvirt-lxc", "other"}
    assert len(removed) == 4
    # the tree of a start that runs is left alone, empty cgroups in it included
    host.container({})
    (pids / OWN.rsplit("/", 1)[1] / "system.slice").mkdir(parents=True)
    assert release("test", root=host.root) == []


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_is_a_valid_posix_script(tmp_path):
    script = init_script()
    path = tmp_path / "fjord-init"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    assert script.startswith("#!/bin/sh\n")
    assert "exec unshare --cgroup /bin/sh /usr/local/sbin/fjord-init --fjord-mount" in script
    assert 'init=/sbin/init' in script
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(path)]).returncode == 0
