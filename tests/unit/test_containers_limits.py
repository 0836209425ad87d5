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


# -- cgroup v2 (Debian 12/13 with systemd-machined, libvirt 11) ------------------------

# What a real Debian 13 host shows (DESIGN, facts verified on a real boot): libvirt's
# cgroup for a container, in /proc/PID/cgroup (raw) and in mountinfo (\ooo-escaped).
V2_OWN = "/machine.slice/machine-lxc\\x2d560\\x2dtest.scope/libvirt"
V2_OWN_ESCAPED = V2_OWN.replace("\\", "\\134")
V2_HOST_MOUNTINFO = ("24 30 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 "
                     "- cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
# the container's mounts, read from the host: libvirt's bind of the host's whole tree,
# or what fjord-init mounted from inside the namespace (rooted at its own cgroup)
LIBVIRT_BIND = ("812 790 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - "
                "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
FRESH = (f"815 790 0:21 {V2_OWN_ESCAPED} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - "
         "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
CONTAINER_MOUNTS = ("790 789 0:95 / / rw,relatime - ext4 /dev/vda1 rw\n"
                    "800 790 0:96 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro\n")


class FakeV2Host(FakeHost):
    """A cgroup v2 host: one hierarchy, libvirt's cgroup under machine.slice."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc/self").mkdir(parents=True)
        (root / "proc/self/mountinfo").write_text(V2_HOST_MOUNTINFO)
        (root / limits.LXC_RUN).mkdir(parents=True)
        self.memory = root / "sys/fs/cgroup" / V2_OWN.lstrip("/")
        self.memory.mkdir(parents=True)
        for name, value in (("max", 512 << 20), ("current", 40 << 20), ("peak", 61 << 20)):
            (self.memory / f"memory.{name}").write_text(f"{value}\n")

    def v2_container(self, *, namespace: bool, outcome: str | None, mounts: str = FRESH,
                     extra: dict[str, str] | None = None, lxcfs: str | None = None) -> None:
        """libvirt_lxc 560 and the container's init 561 plus two services; with
        ``namespace`` the init is in a cgroup namespace of its own. ``outcome`` is what
        fjord-init left in PID 1's environment (None: no fjord-init)."""
        (self.root / limits.LXC_RUN / "test.pid").write_text("560\n")
        host_ns = "4026531835"
        self.process(560, "libvirt_lxc", f"0::{V2_OWN}\n", pidns="4026531836",
                     cgroupns=host_ns, children=(561,))
        ns = "4026533200" if namespace else host_ns
        services = {"systemd": "/init.scope", "sshd": "/system.slice/ssh.service",
                    "systemd-journal": "/system.slice/systemd-journald.service"}
        for pid, (comm, sub) in enumerate(services.items(), start=561):
            self.process(pid, comm, f"0::{V2_OWN}{sub}\n", cgroupns=ns)
        for pid, (comm, path) in enumerate((extra or {}).items(), start=700):
            self.process(pid, comm, f"0::{path}\n", cgroupns=ns)
        init = self.root / "proc/561"
        (init / "mountinfo").write_text(CONTAINER_MOUNTS + mounts)
        env = [b"container=lxc-libvirt", b"PATH=/bin:/sbin", b"TERM=linux"]
        if outcome is not None:
            env.append(b"FJORD_INIT=" + outcome.encode())
        if lxcfs is not None:
            env.append(b"FJORD_LXCFS=" + lxcfs.encode())
        (init / "environ").write_bytes(b"\0".join(env) + b"\0")


@pytest.fixture
def v2(tmp_path: Path) -> FakeV2Host:
    return FakeV2Host(tmp_path)


def test_v2_own_namespace_and_memory_max_both_pass(v2):
    v2.v2_container(namespace=True, outcome="cgroupns")
    assert limits.verdicts("test", expected=512 << 20, root=v2.root)[:2] == [
        ("memory limit enforced", True,
         f"all 3 processes in {V2_OWN}: limit 512 MiB, using 40 MiB (peak 61 MiB)"),
        ("sees only its own cgroups", True, f"own cgroup namespace, rooted at {V2_OWN}"),
    ]
    assert limits.init_outcome(561, root=v2.root) == "cgroupns"


def test_v2_without_namespace_says_fjord_init_did_not_run_and_how_to_fix(v2):
    """What the real Debian 13 host showed with the old fjord-init (it left v2 alone)."""
    v2.v2_container(namespace=False, outcome=None, mounts=LIBVIRT_BIND)
    (limit, private, _, _) = limits.verdicts("test", root=v2.root)
    assert limit[1]  # the limit itself holds: every process is under memory.max
    assert not private[1]
    assert private[2].startswith("no cgroup namespace: it sees the host's whole cgroup tree; "
                                 "fjord-init did not run (is its init "
                                 "/usr/local/sbin/fjord-init?), or it started with an older "
                                 "fjord-init")
    assert "fjord container restart test" in private[2]
    assert private[2].endswith("(see docs/containers.md: limits and cgroups)")


def test_v2_a_failed_fjord_init_is_quoted(v2):
    why = "cannot unshare a cgroup namespace: it sees the host's whole cgroup tree"
    v2.v2_container(namespace=False, outcome=f"failed: {why}", mounts=LIBVIRT_BIND)
    ok, detail = cgroups_private("test", root=v2.root)
    assert not ok and f"fjord-init could not make one: {why}" in detail
    assert "fjord container console test" in detail


def test_v2_namespace_but_the_hosts_tree_still_mounted_is_not_private(v2):
    """fjord-init unshared, but could not unmount libvirt's bind of the whole tree."""
    v2.v2_container(namespace=True, outcome="failed: cannot unmount the host's cgroup tree "
                    "from /sys/fs/cgroup", mounts=LIBVIRT_BIND + FRESH)
    ok, detail = cgroups_private("test", root=v2.root)
    assert not ok
    assert detail.startswith(f"own cgroup namespace, but its /sys/fs/cgroup still shows the "
                             f"cgroup tree from / (wider than its own {V2_OWN})")
    assert "cannot unmount the host's cgroup tree" in detail


def test_v2_a_process_left_in_the_hosts_session_is_outside_the_limit(v2):
    """The old `fjord check` ran its probes in the host's session cgroup (issue 13)."""
    v2.v2_container(namespace=True, outcome="cgroupns",
                    extra={"getent": "/user.slice/user-0.slice/session-3.scope"})
    ok, detail = limits_enforced("test", root=v2.root)
    assert not ok and detail.startswith(
        f"1 of 4 processes are outside its memory cgroup {V2_OWN}")
    assert "700 getent in /user.slice/user-0.slice/session-3.scope" in detail


def test_v2_no_memory_max_fails(v2):
    v2.v2_container(namespace=True, outcome="cgroupns")
    (v2.memory / "memory.max").write_text("max\n")
    ok, detail = limits_enforced("test", root=v2.root)
    assert not ok and detail == f"its memory cgroup {V2_OWN} has no limit"


def test_the_live_memory_limit_is_read_from_the_cgroup_on_v1_and_v2(tmp_path):
    """What `plan` compares with the declared memory: the cgroup's own file, which the
    container's root user can write (issue 14 item 6)."""
    host, v2 = FakeHost(tmp_path / "v1"), FakeV2Host(tmp_path / "v2")
    assert limits.memory_limit("test", root=host.root) == (False, None)  # not running
    host.container({})
    assert limits.memory_limit("test", root=host.root) == (True, 512 << 20)
    host.numbers(2 << 30, 1, 1)  # raised from inside
    assert limits.memory_limit("test", root=host.root) == (True, 2 << 30)
    host.numbers((1 << 63) - 4096, 1, 1)
    assert limits.memory_limit("test", root=host.root) == (True, None)
    v2.v2_container(namespace=True, outcome="cgroupns")
    assert limits.memory_limit("test", root=v2.root) == (True, 512 << 20)
    (v2.memory / "memory.max").write_text("max\n")
    assert limits.memory_limit("test", root=v2.root) == (True, None)
    assert limits.same_limit(512 << 20, 512 << 20)
    assert limits.same_limit((512 << 20) - 100, (512 << 20) - 1)  # kept in whole pages
    assert not limits.same_limit(2 << 30, 512 << 20)
    assert not limits.same_limit(None, 512 << 20)


def test_v2_cgroup_procs_for_probes(v2):
    v2.v2_container(namespace=True, outcome="cgroupns")
    assert limits.cgroup_procs(561, root=v2.root) == [
        v2.root / "sys/fs/cgroup" / V2_OWN.lstrip("/") / "init.scope/cgroup.procs"]
    with pytest.raises(limits.FjordError, match="process 999 is gone"):
        limits.cgroup_procs(999, root=v2.root)


def test_verdicts_never_raise(v2, monkeypatch):
    v2.v2_container(namespace=True, outcome="cgroupns")

    def broken(*_a, **_k):
        raise ValueError("odd /proc")

    monkeypatch.setattr(limits, "limits_enforced", broken)
    (limit, private, _, _) = limits.verdicts("test", root=v2.root)
    assert limit[:2] == ("memory limit enforced", False)
    assert limit[2].startswith("cannot tell: ValueError: odd /proc") and private[1]


# -- fjord-init itself, run by sh with stand-ins for unshare, mount, umount -------------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
case " ${FAIL-} " in *" $(basename "$0") "*) exit 1 ;; esac
case $(basename "$0") in
unshare)  # unshare --cgroup CMD...: run CMD (the new namespace is the test's word)
    shift; exec "$@" ;;
mount)    # a cgroup2 mount has a cgroup.procs
    for a; do last=$a; done
    case " $* " in *" -t cgroup2 "*) : > "$last/cgroup.procs" ;; esac ;;
umount)   # the first lazy unmount takes libvirt's bind mount away, the next finds none
    case $1 in -l) [ -e "$LOG.unmounted" ] && exit 1; : > "$LOG.unmounted" ;; esac ;;
esac
exit 0
"""
INIT = """#!/bin/sh
echo "init $* FJORD_INIT=${FJORD_INIT-unset}" >> "$LOG"
echo "${FJORD_LXCFS-unset}" > "$LOG.lxcfs"
"""


def run_init(tmp_path: Path, cgroup: str, *, fail: str = "", lxcfs: bool = True,
             mounts: str = "") -> tuple[list[str], str]:
    """Run fjord-init with /proc/self/cgroup = ``cgroup``; returns what it ran and said.
    ``lxcfs``: whether the host's lxcfs answers (its meminfo and stat; the container's
    /proc has meminfo only, so only that one is bound); ``mounts``: more lines of
    /proc/self/mounts."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("unshare", "mount", "umount"):
        (bin_ / name).write_text(STUB)
        (bin_ / name).chmod(0o755)
    (bin_ / "init").write_text(INIT)
    (bin_ / "init").chmod(0o755)
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    cg.mkdir()
    (proc / "self/cgroup").write_text(cgroup)
    (proc / "self/mounts").write_text("cgroup2 /elsewhere cgroup2 rw 0 0\n"
                                      + mounts.replace("T/", f"{tmp_path}/"))
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    if lxcfs:
        (tmp_path / "lxcfs/proc").mkdir(parents=True)
        for name in ("meminfo", "stat"):
            (tmp_path / "lxcfs/proc" / name).write_text(f"{name} of the container\n")
    script = tmp_path / "fjord-init"
    # the loader (fjord.containers.sandbox) as a stand-in that only becomes the init
    loader = tmp_path / "loader"
    loader.write_text("my ($filter, @init) = @ARGV; exec { $init[0] } @init;\n")
    (tmp_path / "filter").write_bytes(b"")
    script.write_text(init_script(str(bin_ / "init"), str(script), cgroup=str(cg),
                                  proc=str(proc), loader=str(loader),
                                  bpf=str(tmp_path / "filter"),
                                  lxcfs=str(tmp_path / "lxcfs")))
    log = tmp_path / "log"
    log.write_text("")
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "LOG": str(log), "FAIL": fail,
           "FJORD_INIT": "stale"}
    out = subprocess.run(["sh", str(script), "--log-level=info"], env=env,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    steps = [line.replace(str(tmp_path), "T") for line in log.read_text().splitlines()]
    return steps, out.stderr


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_on_v2_unshares_remounts_and_boots(tmp_path):
    steps, said = run_init(tmp_path, f"0::{V2_OWN}\n")
    assert steps == [
        "unshare --cgroup true",
        "unshare --cgroup /bin/sh T/fjord-init --fjord-mount2 --log-level=info",
        "mount --make-rprivate T/cgroup",
        "umount -R T/cgroup",
        "umount -l T/cgroup",
        "umount -l T/cgroup",
        "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 T/cgroup",
        "mount --bind T/lxcfs/proc/meminfo T/proc/meminfo",
        "umount -l T/lxcfs",
        "init --log-level=info FJORD_INIT=cgroupns",
    ]
    assert said == ""


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
@pytest.mark.parametrize(("fail", "last", "message"), [
    ("unshare", "init --log-level=info FJORD_INIT=failed: cannot unshare a cgroup namespace:"
     " it sees the host's whole cgroup tree",
     "fjord-init: cannot unshare a cgroup namespace: it sees the host's whole cgroup tree"),
    ("mount", "init --log-level=info FJORD_INIT=failed: cannot mount cgroup2 on T/cgroup "
     "(systemd will try)", "fjord-init: cannot mount cgroup2 on"),
])
def test_fjord_init_on_v2_says_what_failed_and_still_boots(tmp_path, fail, last, message):
    steps, said = run_init(tmp_path, f"0::{V2_OWN}\n", fail=fail)
    assert steps[-1] == last
    assert said.startswith(message)


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
@pytest.mark.parametrize("cgroup", ["0::/\n", ""])
def test_fjord_init_on_v2_in_a_namespace_already_changes_nothing(tmp_path, cgroup):
    steps, said = run_init(tmp_path, cgroup)
    assert steps == ["mount --bind T/lxcfs/proc/meminfo T/proc/meminfo", "umount -l T/lxcfs",
                     "init --log-level=info FJORD_INIT=kept"] and said == ""


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_on_v1_still_joins_and_mounts_each_hierarchy(tmp_path):
    steps, said = run_init(tmp_path, cgroup_file({}))
    assert steps[0] == "unshare --cgroup true"
    assert steps[1] == "umount -R T/cgroup"
    assert steps[2] == "mount -t tmpfs -o mode=700 fjord-init T/cgroup"
    # it joins libvirt's cgroup where it is elsewhere: pids, name=systemd, cgroup2
    joined = [s for s in steps if s.startswith("mount -t cgroup") and "T/cgroup/h" in s]
    assert joined == ["mount -t cgroup -o name=systemd cgroup T/cgroup/h",
                      "mount -t cgroup -o pids cgroup T/cgroup/h",
                      "mount -t cgroup2 cgroup2 T/cgroup/h"]
    assert "unshare --cgroup /bin/sh T/fjord-init --fjord-mount --log-level=info" in steps
    assert "mount -t cgroup -o nosuid,nodev,noexec,memory cgroup T/cgroup/memory" in steps
    assert steps[-1] == "init --log-level=info FJORD_INIT=cgroupns" and said == ""


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_binds_lxcfs_files_over_proc_and_says_so(tmp_path):
    steps, said = run_init(tmp_path, "0::/\n")
    assert [s for s in steps if s.startswith("mount")] == [
        "mount --bind T/lxcfs/proc/meminfo T/proc/meminfo"]
    assert (tmp_path / "log.lxcfs").read_text() == "mounted\n" and said == ""


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_without_lxcfs_still_boots_without_libvirts_meminfo(tmp_path):
    # lxcfs down on the host: libvirt's FUSE meminfo (unreadable by procps) goes, and the
    # container boots with the host's /proc
    steps, said = run_init(tmp_path, "0::/\n", lxcfs=False,
                           mounts="libvirt T/proc/meminfo fuse rw,allow_other 0 0\n")
    assert steps == ["umount T/proc/meminfo", "umount -l T/lxcfs",
                     "init --log-level=info FJORD_INIT=kept"]
    assert (tmp_path / "log.lxcfs").read_text().startswith("missing: nothing answers at ")
    assert said.startswith("fjord-init: missing: nothing answers at T/lxcfs".replace(
        "T/", f"{tmp_path}/"))


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_fjord_init_says_when_a_bind_fails_and_still_boots(tmp_path):
    steps, said = run_init(tmp_path, "0::/\n", fail="mount")
    assert steps[-1] == "init --log-level=info FJORD_INIT=kept"
    assert (tmp_path / "log.lxcfs").read_text().startswith("failed: cannot bind ")
    assert "fjord-init: failed: cannot bind" in said


@pytest.mark.parametrize(("lxcfs", "ok", "said"), [
    ("mounted", True, "lxcfs's meminfo, cpuinfo, stat, uptime... over its /proc"),
    ("missing: nothing answers at /var/lib/lxcfs", False,
     "lxcfs did not answer when it started: free and top show the host's memory; start "
     "lxcfs (`fjord apply`), then fjord container restart test"),
    (None, False, "started before fjord bound lxcfs's files"),
])
def test_the_check_says_whether_the_container_reads_lxcfs_files(v2, lxcfs, ok, said):
    v2.v2_container(namespace=True, outcome="cgroupns", lxcfs=lxcfs)
    (*_, line) = limits.verdicts("test", root=v2.root)
    assert line[0] == "limit-aware /proc (lxcfs)" and line[1] is ok
    assert line[2].startswith(said)
