"""The lab's readings of the machine: mountinfo, cgroup hierarchies, process start times,
and the small-tree copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fjord.errors import FjordError
from fjord.lab.cgroups import hierarchies
from fjord.lab.mounts import LabLayout, copy_small_tree, parse_mountinfo
from fjord.lab.procs import Proc, start_time

# /proc/self/mountinfo of this machine (Debian 12, cgroup v1 hybrid), abridged
MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
43 42 0:4 net:[4026532177] /run/netns/fjord-lab-up rw shared:2 - nsfs nsfs rw
44 27 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_hierarchies_of_the_hybrid_layout() -> None:
    found = hierarchies(MOUNTINFO)
    assert found["memory"] == "memory"
    assert found["systemd"] == "name=systemd"
    assert "unified" not in found  # libvirt 9 refuses the hybrid with cgroup2 beside


def test_cgroup_v2_only_is_refused_with_a_reason() -> None:
    v2 = "31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    with pytest.raises(FjordError, match="cgroup v1 controllers"):
        hierarchies(v2)


def test_mountinfo_points_and_types() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[0].point == "/" and entries[0].fstype == "ext4"
    assert [e.point for e in entries if e.fstype == "nsfs"] == ["/run/netns/fjord-lab-up"]
    assert entries[-1].point == "/mnt/with space"


def test_processes_are_known_by_pid_and_start_time() -> None:
    me = Proc.of(os.getpid())
    assert me is not None and me.alive()
    assert Proc.from_json(me.to_json()) == me
    assert not Proc(me.pid, me.start + 1).alive()  # a reused PID is another process
    assert start_time(2**22 + 1) is None
    assert Proc.from_json({"pid": "1"}) is None


def test_copy_small_tree_keeps_links_and_leaves_big_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "qemu/networks").mkdir(parents=True)
    (src / "qemu/networks/default.xml").write_text("<network/>")
    (src / "qemu/networks/autostart").symlink_to("default.xml")
    (src / "images").mkdir()
    (src / "images/disk.img").write_bytes(b"\0" * (2 << 20))
    os.chmod(src / "qemu", 0o750)
    copy_small_tree(src, dst)
    assert (dst / "qemu/networks/default.xml").read_text() == "<network/>"
    assert os.readlink(dst / "qemu/networks/autostart") == "default.xml"
    assert (dst / "images").is_dir() and not (dst / "images/disk.img").exists()
    assert (dst / "qemu").stat().st_mode & 0o777 == 0o750


def test_layout_paths(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path / "lab")
    assert layout.upper("/etc") == tmp_path / "lab/etc.upper"
    assert layout.work("/root") == tmp_path / "lab/root.work"
    assert layout.private("/run") == tmp_path / "lab/run"
    assert layout.private("/var/lib") == tmp_path / "lab/var/lib"
    assert layout.shared_cache == tmp_path / ".cache/fjord"


def test_the_lab_service_manager_refuses_to_run_outside_a_lab(tmp_path: Path) -> None:
    from fjord.lab.services import LabServiceManager

    with pytest.raises(FjordError, match="outside a lab"):
        LabServiceManager(run_dir=tmp_path)
