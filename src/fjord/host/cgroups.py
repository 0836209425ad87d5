"""The cgroup layout, and what it means for containers.

libvirt's LXC driver puts each container in cgroups; whether that works, and whether
its limits hold, depends on how the host mounted them:

- ``unified``: cgroup2 alone at /sys/fs/cgroup (Debian 12's and 13's default).
  Containers run; memory limits are enforced. libvirt gives them no cgroup namespace
  there either (libvirt 11, measured on Debian 13): fjord-init makes one, rooted in the
  container's cgroup, and mounts a fresh cgroup2 from inside it.
- ``hybrid``: v1 controllers plus cgroup2 at /sys/fs/cgroup/unified (the default of
  older systemd, or `systemd.unified_cgroup_hierarchy=0`). libvirt 9 cannot start LXC
  domains there ("Unable to create directory /sys/fs/cgroup/unified").
- ``legacy``: v1 controllers only. Containers run, but libvirt gives them no cgroup
  namespace: a container's systemd would move itself to the root of the hierarchies it
  sees and out of its memory limit (measured, see DESIGN fact 3). fjord's containers
  start through fjord-init (fjord.containers.limits), which gives each one a cgroup
  namespace rooted in its own cgroup first; `fjord check` verifies it per container.
- ``none``: nothing mounted (e.g. under `ip netns exec`): no cgroup backend at all.

The persistent fix is the unified hierarchy, chosen on the kernel command line, which
only a reboot applies. fjord writes it (/etc/default/grub.d/fjord.cfg + update-grub)
only when asked to (host.cgroups.unified), and says that a reboot is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fjord import runner
from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.host.files import File
from fjord.host.services import Trigger
from fjord.mountinfo import Mount, parse_mountinfo

ROOT = Path("/")
CGROUP_DIR = "/sys/fs/cgroup"
UNIFIED_DIR = "/sys/fs/cgroup/unified"
GRUB_FILE = "etc/default/grub.d/fjord.cfg"
UNIFIED_ARG = "systemd.unified_cgroup_hierarchy=1"

# libvirt's LXC driver needs these v1 controllers (libvirt's LXC driver documentation).
LXC_V1_CONTROLLERS = ("cpuacct", "memory", "devices")
KNOWN_CONTROLLERS = frozenset({
    "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
    "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc", "io",
})
# Kernel arguments that decide the layout, reported as found.
CMDLINE_KEYS = ("systemd.unified_cgroup_hierarchy", "systemd.legacy_systemd_cgroup_controller",
                "cgroup_no_v1", "cgroup_disable", "cgroup_enable")

Mode = Literal["unified", "hybrid", "legacy", "none"]
MemoryLimits = Literal["enforced", "not guaranteed", "unavailable"]


def parse_proc_cgroups(text: str) -> dict[str, bool]:
    """/proc/cgroups → controller → enabled (compiled in and not disabled at boot)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if len(fields) >= 4:
            out[fields[0]] = fields[3] == "1"
    return out


@dataclass(frozen=True)
class CgroupLayout:
    mode: Mode
    v1_controllers: tuple[str, ...]  # mounted v1 controllers
    v2_mount: str | None  # where cgroup2 is mounted
    v2_controllers: tuple[str, ...]  # controllers available in the cgroup2 hierarchy
    unified_dir: bool  # /sys/fs/cgroup/unified exists
    kernel_cgroupns: bool  # the kernel offers cgroup namespaces
    disabled: tuple[str, ...]  # controllers disabled at boot (cgroup_disable=…)
    cmdline: tuple[str, ...]  # the kernel arguments that decide the layout
    init: str  # PID 1's name: only systemd reads systemd.* arguments


def classify(mounts: list[Mount], proc_cgroups: dict[str, bool], *,
             v2_controllers: tuple[str, ...] = (), unified_dir: bool = False,
             kernel_cgroupns: bool = False, cmdline: str = "", init: str = "unknown"
             ) -> CgroupLayout:
    ours = [m for m in mounts if m.point == CGROUP_DIR or m.point.startswith(CGROUP_DIR + "/")]
    v1 = sorted({opt for m in ours if m.fstype == "cgroup" for opt in m.options
                 if opt in KNOWN_CONTROLLERS})
    v2 = [m for m in ours if m.fstype == "cgroup2"]
    v2_mount = v2[0].point if v2 else None
    mode: Mode
    if v2_mount == CGROUP_DIR:
        mode = "unified"
    elif v1 and v2:
        mode = "hybrid"
    elif v1:
        mode = "legacy"
    else:
        mode = "none"
    args = tuple(a for a in cmdline.split() if a.partition("=")[0] in CMDLINE_KEYS)
    return CgroupLayout(mode, tuple(v1), v2_mount, v2_controllers if v2_mount else (),
                        unified_dir, kernel_cgroupns,
                        tuple(sorted(c for c, on in proc_cgroups.items() if not on)), args, init)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, PermissionError):
        return ""


def detect(root: Path = ROOT) -> CgroupLayout:
    """The layout this process sees (in the lab: the lab's own mounts)."""
    mounts = parse_mountinfo(_read(root / "proc/self/mountinfo"))
    v2 = [m.point for m in mounts if m.fstype == "cgroup2" and m.point.startswith(CGROUP_DIR)]
    controllers: tuple[str, ...] = ()
    if v2:
        controllers = tuple(_read(root / v2[0].lstrip("/") / "cgroup.controllers").split())
    return classify(
        mounts, parse_proc_cgroups(_read(root / "proc/cgroups")),
        v2_controllers=controllers,
        unified_dir=(root / UNIFIED_DIR.lstrip("/")).is_dir(),
        kernel_cgroupns=(root / "proc/self/ns/cgroup").exists(),
        cmdline=_read(root / "proc/cmdline"),
        init=_read(root / "proc/1/comm").strip() or "unknown",
    )


@dataclass(frozen=True)
class Assessment:
    can_run_lxc: bool
    reason: str
    memory_limits: MemoryLimits
    container_cgroupns: bool
    fix: str | None  # what to change persistently, None if nothing
    reboot_needed: bool  # the fix applies only after a reboot


FIX_UNIFIED = (
    "boot with the unified hierarchy: set host.cgroups.unified: true (fjord writes "
    f"/{GRUB_FILE} with {UNIFIED_ARG} and runs update-grub) or add {UNIFIED_ARG} to the kernel "
    "command line yourself, then reboot: nothing changes before the reboot"
)


def _fix_unified(layout: CgroupLayout) -> str:
    fix = FIX_UNIFIED
    if "systemd.unified_cgroup_hierarchy=0" in layout.cmdline:
        fix += "; and remove systemd.unified_cgroup_hierarchy=0, which the kernel command line " \
               "has now (usually from GRUB_CMDLINE_LINUX in /etc/default/grub)"
    if layout.init != "systemd":
        fix += f"; PID 1 here is {layout.init}, not systemd: it, not the kernel command " \
               "line, decides the layout"
    return fix


def assess(layout: CgroupLayout) -> Assessment:
    if layout.mode == "none":
        return Assessment(False, f"no cgroup hierarchy is mounted under {CGROUP_DIR}: libvirt "
                          "has no cgroup backend", "unavailable", False,
                          f"mount cgroup2 at {CGROUP_DIR} (systemd does at boot)", False)
    if layout.mode == "hybrid":
        return Assessment(False, f"hybrid layout (v1 controllers, cgroup2 at {layout.v2_mount}):"
                          " libvirt's LXC driver cannot start containers (\"Unable to create "
                          f"directory {UNIFIED_DIR}\")", "unavailable", False,
                          _fix_unified(layout), True)
    if layout.mode == "legacy":
        missing = [c for c in LXC_V1_CONTROLLERS if c not in layout.v1_controllers]
        if missing:
            return Assessment(False, f"cgroup v1 without the {', '.join(missing)} controller(s) "
                              "libvirt's LXC driver needs", "unavailable", False,
                              _fix_unified(layout), True)
        return Assessment(True, "cgroup v1 only: libvirt gives containers no cgroup "
                          "namespace; fjord-init gives each its own, and `fjord check` "
                          "verifies per container that its limits hold",
                          "enforced", layout.kernel_cgroupns, None, False)
    if "memory" not in layout.v2_controllers:
        return Assessment(True, "cgroup v2 without the memory controller: memory limits are "
                          "not applied", "unavailable", layout.kernel_cgroupns,
                          "remove cgroup_disable=memory from the kernel command line, then "
                          "reboot", True)
    # libvirt (9 and 11) gives a container no cgroup namespace on v2 either and
    # bind-mounts the host's whole tree: fjord-init unshares one rooted in the
    # container's cgroup and mounts a fresh cgroup2 from inside it.
    if not layout.kernel_cgroupns:
        return Assessment(True, "cgroup v2 (unified): limits are enforced by libvirt, but the "
                          "kernel has no cgroup namespaces: containers see the host's cgroup "
                          "tree", "enforced", False, None, False)
    return Assessment(True, "cgroup v2 (unified): limits are enforced by libvirt; "
                      "fjord-init gives each container a cgroup namespace of its own, and "
                      "`fjord check` verifies it per container", "enforced", True, None, False)


def can_run_lxc(layout: CgroupLayout) -> tuple[bool, str]:
    a = assess(layout)
    return a.can_run_lxc, a.reason


def status_report(root: Path = ROOT) -> dict[str, Any]:
    """For `fjord status`: the layout and what it means."""
    layout = detect(root)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(layout).items()}
    return {"layout": fields, **asdict(assess(layout))}


# -- resources -----------------------------------------------------------------------


class CgroupCheck(Resource):
    """Never changes anything: reports in the plan what the layout means for containers."""

    kind = "cgroups"

    def __init__(self, root: Path = ROOT, *, unified_requested: bool = False) -> None:
        super().__init__("layout")
        self.root = root
        self.unified_requested = unified_requested

    def changes(self, ctx: Context) -> list[Change]:
        layout = detect(self.root)
        a = assess(layout)
        if self.unified_requested and layout.mode != "unified":
            ctx.warn(f"cgroups: the host still has the {layout.mode} layout; the unified "
                     "hierarchy fjord configured for the kernel command line applies after a "
                     "reboot")
        elif not a.can_run_lxc:
            ctx.warn(f"cgroups: containers cannot start: {a.reason}. Fix: {a.fix}")
        elif a.memory_limits != "enforced":
            ctx.warn(f"cgroups: memory limits are {a.memory_limits}: {a.reason}. Fix: {a.fix}")
        return []

    def unchanged_reason(self, ctx: Context) -> str:
        layout = detect(self.root)
        return f"{layout.mode}: {assess(layout).reason}"


def render_grub() -> str:
    return (
        "# Managed by fjord (host.cgroups.unified): the unified cgroup hierarchy, which\n"
        "# libvirt's LXC driver needs to start containers and enforce their limits.\n"
        "# Applies at the next boot (update-grub, then reboot).\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {UNIFIED_ARG}"\n'
    )


class UpdateGrub(Trigger):
    kind = "update-grub"
    what = "update-grub"
    note = "the kernel command line changes at the next boot: reboot to apply"

    def action(self, ctx: Context) -> None:
        runner.run(["update-grub"], timeout=300,
                   hint="a host that does not boot with GRUB needs "
                   f"{UNIFIED_ARG} on its kernel command line by other means")


def resources(*, unified: bool, root: Path = ROOT,
              after: tuple[Reference, ...] = ()) -> list[Resource]:
    """The layout check, and with ``unified`` the kernel command line for cgroup v2.
    Turning ``unified`` off removes fjord's GRUB file (and runs update-grub again)."""
    out: list[Resource] = [CgroupCheck(root, unified_requested=unified)]
    path = root / GRUB_FILE
    if unified:
        grub = File(path, render_grub(), reason="unified cgroup hierarchy at the next boot",
                    after=after)
    elif path.exists():
        grub = File(path, None, ensure="absent", after=after)
    else:
        return out
    return [*out, grub, UpdateGrub("kernel-cmdline", [grub], after=(grub,))]
