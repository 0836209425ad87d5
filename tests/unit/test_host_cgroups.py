"""cgroup layouts, from captured /proc files laid out as a root (golden/host/cgroups)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fjord.engine.resource import Context
from fjord.host import cgroups
from fjord.host.services import Trigger

LAYOUTS = Path(__file__).parent / "golden" / "host" / "cgroups"
V1_ALL = ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids")


@pytest.mark.parametrize(("name", "mode", "v1", "v2_mount"), [
    ("unified", "unified", (), "/sys/fs/cgroup"),
    ("unified-nomemory", "unified", (), "/sys/fs/cgroup"),
    ("hybrid", "hybrid", V1_ALL, "/sys/fs/cgroup/unified"),
    ("hybrid-systemd", "hybrid", (*V1_ALL[:6], "memory", "net_cls", "net_prio", "pids"),
     "/sys/fs/cgroup/unified"),
    ("legacy", "legacy", V1_ALL, None),
    ("legacy-partial", "legacy", ("blkio", "cpu", "cpuacct", "cpuset", "freezer", "pids"), None),
    ("none", "none", (), None),
])
def test_detect(name: str, mode: str, v1: tuple[str, ...], v2_mount: str | None):
    layout = cgroups.detect(LAYOUTS / name)
    assert layout.mode == mode
    assert layout.v1_controllers == tuple(sorted(v1))
    assert layout.v2_mount == v2_mount
    assert layout.kernel_cgroupns


@pytest.mark.parametrize(("name", "can_run", "memory", "reboot"), [
    ("unified", True, "enforced", False),
    ("unified-nomemory", True, "unavailable", True),
    ("hybrid", False, "unavailable", True),
    ("hybrid-systemd", False, "unavailable", True),
    ("legacy", True, "enforced", False),
    ("legacy-partial", False, "unavailable", True),
    ("none", False, "unavailable", False),
])
def test_assess(name: str, can_run: bool, memory: str, reboot: bool):
    a = cgroups.assess(cgroups.detect(LAYOUTS / name))
    assert (a.can_run_lxc, a.memory_limits, a.reboot_needed) == (can_run, memory, reboot)
    assert (a.fix is None) == (name in ("unified", "legacy"))


def test_hybrid_reason_and_fix():
    layout = cgroups.detect(LAYOUTS / "hybrid")
    ok, reason = cgroups.can_run_lxc(layout)
    assert not ok and "Unable to create directory /sys/fs/cgroup/unified" in reason
    fix = cgroups.assess(layout).fix or ""
    assert "systemd.unified_cgroup_hierarchy=1" in fix and "reboot" in fix
    assert "remove systemd.unified_cgroup_hierarchy=0" in fix
    assert layout.cmdline == ("systemd.unified_cgroup_hierarchy=0",)
    assert layout.unified_dir


def test_legacy_reason_names_the_missing_namespace_and_fjord_init():
    layout = cgroups.detect(LAYOUTS / "legacy")
    a = cgroups.assess(layout)
    assert "no cgroup namespace" in a.reason and "fjord-init" in a.reason
    # fjord-init gives each container a namespace where the kernel offers them
    assert a.container_cgroupns == layout.kernel_cgroupns and a.fix is None


def test_unified_gives_containers_a_namespace_through_fjord_init():
    layout = cgroups.detect(LAYOUTS / "unified")
    a = cgroups.assess(layout)
    assert a.can_run_lxc and a.memory_limits == "enforced" and a.fix is None
    assert a.container_cgroupns and "fjord-init" in a.reason
    assert "see the host's cgroup tree" not in a.reason
    # a kernel without cgroup namespaces: containers see the host's tree, said so
    from dataclasses import replace

    old = cgroups.assess(replace(layout, kernel_cgroupns=False))
    assert not old.container_cgroupns and "host's cgroup tree" in old.reason


def test_missing_v1_controllers_are_named():
    a = cgroups.assess(cgroups.detect(LAYOUTS / "legacy-partial"))
    assert "memory, devices" in a.reason


def test_disabled_memory_controller():
    layout = cgroups.detect(LAYOUTS / "unified-nomemory")
    assert layout.disabled == ("memory",) and layout.cmdline == ("cgroup_disable=memory",)
    assert "cgroup_disable=memory" in (cgroups.assess(layout).fix or "")


def test_mountinfo_escapes_and_optional_fields():
    text = ("36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root "
            "rw,errors=continue\nnot a mount line\n")
    (m,) = cgroups.parse_mountinfo(text)
    assert (m.point, m.root, m.fstype, m.options) == (
        "/mnt two", "/mnt1", "ext3", ("rw", "errors=continue"))


def test_status_report_is_json(tmp_path: Path):
    report = cgroups.status_report(LAYOUTS / "hybrid")
    assert json.loads(json.dumps(report)) == report
    assert report["layout"]["mode"] == "hybrid" and report["can_run_lxc"] is False


def test_check_warns_in_the_plan():
    ctx = Context(desired=None)  # type: ignore[arg-type]
    check = cgroups.CgroupCheck(LAYOUTS / "hybrid")
    assert check.changes(ctx) == []
    (warning,) = ctx.warnings
    assert warning.startswith("cgroups: containers cannot start")
    assert check.unchanged_reason(ctx).startswith("hybrid: ")
    quiet = Context(desired=None)  # type: ignore[arg-type]
    cgroups.CgroupCheck(LAYOUTS / "unified").changes(quiet)
    assert quiet.warnings == []


def test_unified_switch_writes_grub_and_says_reboot(tmp_path: Path):
    root = tmp_path / "root"
    assert [r.id for r in cgroups.resources(unified=False, root=root)] == ["cgroups layout"]
    check, grub, update = cgroups.resources(unified=True, root=root)
    assert isinstance(update, Trigger) and "reboot" in update.note
    assert grub.id == f"file {root}/etc/default/grub.d/fjord.cfg"
    text = cgroups.render_grub()
    assert text.endswith('GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX '
                         'systemd.unified_cgroup_hierarchy=1"\n')
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / cgroups.GRUB_FILE).write_text(text)
    _, removal, _ = cgroups.resources(unified=False, root=root)
    assert getattr(removal, "ensure", None) == "absent"


def test_real_host_detection_reads_without_root():
    # Whatever this machine is, detection only reads /proc and /sys.
    layout = cgroups.detect()
    assert layout.mode in ("unified", "hybrid", "legacy", "none")
    assert os.path.exists("/proc/self/mountinfo")
