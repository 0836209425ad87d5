"""What root in a container can no longer do (issue 14): the attacks of a tenant who
logged in over SSH, run from the container's own processes (sshd's children inherit
its init's bounding set and syscall filter; `fjord container exec` enters from the host
and would not show them). Each probe leaves the host as it was: it opens files for
writing without writing, and calls the kernel with arguments that fail after its
permission check (EINVAL, EBADF) when that check lets them through.

Open in a privileged container only (CAP_SYS_ADMIN in the host's user namespace): a
fresh proc/sysfs mount with a writable core_pattern or power/state, a new cgroup v1
hierarchy with its release_agent, a device granted in its own devices cgroup. The
default container is unprivileged (a user namespace of its own), where they are closed:
the last test attacks it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import fjord

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
CT4 = "10.1.0.2"

# Each probe prints "NAME: ok" (the kernel let it through) or "NAME: ERRNO" (refused).
PROBES = r"""
use strict; use warnings; use Fcntl;
$| = 1;
sub say_ { my ($name, $ok) = @_; print "$name: ", ($ok ? "ok" : "$!"), "\n"; }
sub errno_is { my ($r, $want) = @_; return $r == -1 && $!{$want}; }

# open_by_handle_at: the handle of the cgroup mount's own directory, then a forged one
# for the root of its hierarchy (kernfs ids: the root is 1 << 32 | 1)
my ($cg) = grep { -d $_ } ("/sys/fs/cgroup/memory", "/sys/fs/cgroup");
my $buf = pack("L l", 64, 0) . ("\0" x 64);
my $mid = pack("l", 0);
if (syscall(303, -100, $cg, $buf, $mid, 0) == 0) {   # name_to_handle_at
    my ($bytes, $type) = unpack("L l", $buf);
    sysopen(my $mnt, $cg, O_RDONLY | O_DIRECTORY) or die "$cg: $!";
    # its own directory by handle, then the hierarchy's root (kernfs ino 1, or gen 1)
    my $fd = syscall(304, fileno($mnt), $buf, O_RDONLY | O_DIRECTORY);  # open_by_handle_at
    say_("open_by_handle_at", $fd >= 0);
    for my $id (1, (1 << 32) | 1) {
        last if $fd < 0;
        my $root = pack("L l Q", 8, $type, $id);
        $fd = syscall(304, fileno($mnt), $root, O_RDONLY | O_DIRECTORY);
        last if $fd >= 0;
    }
    say_("root_by_handle", $fd >= 0);
    if ($fd >= 0) {
        my $agent = "/proc/self/fd/$fd/release_agent";
        if (-e $agent) {   # cgroup v1: opened for writing, never written
            say_("release_agent", sysopen(my $w, $agent, O_WRONLY));
        }
    }
} else {
    say_("name_to_handle_at", 0);
}
# kernel log: syslog(SYSLOG_ACTION_SIZE_BUFFER)
say_("syslog", syscall(103, 10, 0, 0) >= 0);
# kexec_load with flags it rejects after the permission check (EINVAL: allowed)
say_("kexec_load", errno_is(syscall(246, 0, 0, 0, 0xdead8000), "EINVAL"));
say_("kexec_file_load", errno_is(syscall(320, -1, -1, 0, 0, 0), "EBADF"));
# finit_module on no file (EBADF: allowed)
my $none = "";
say_("finit_module", errno_is(syscall(313, -1, $none, 0), "EBADF"));
# the user keyring's id (KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING)
say_("keyctl", syscall(250, 0, -4, 0) >= 0);
# bpf(BPF_MAP_CREATE) with no attributes (EINVAL: allowed)
say_("bpf", errno_is(syscall(321, 0, 0, 0), "EINVAL"));
# port I/O for this process (no port is touched)
say_("iopl", syscall(172, 3) == 0);
# a block device node (the host's first disk: 8:0), removed at once
my $node = "/run/fjord-probe-sda";
say_("mknod", syscall(133, $node, 0060600, (8 << 8) | 0) == 0);
unlink $node;
"""
# Still open (CAP_SYS_ADMIN in the host's user namespace): writable files of a fresh
# proc and sysfs, a new cgroup v1 hierarchy's release_agent, a devices self-grant.
OPEN = r"""
set -u
d=$(mktemp -d)
w() { perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_WRONLY) or exit 1' "$1" && echo "$2: ok" \
      || echo "$2: refused"; }
if mount -t proc proc "$d"; then w "$d/sys/kernel/core_pattern" core_pattern; umount "$d"
else echo "core_pattern: mount refused"; fi
if mount -t sysfs sysfs "$d"; then w "$d/power/state" power_state; umount "$d"
else echo "power_state: mount refused"; fi
if mount -t cgroup -o none,name=fjordprobe cgroup "$d" 2>/dev/null; then
    [ -e "$d/release_agent" ] && w "$d/release_agent" new_hierarchy || echo "new_hierarchy: none"
    umount "$d"
else echo "new_hierarchy: mount refused"; fi
if [ -e /sys/fs/cgroup/devices/devices.allow ]; then
    echo 'b 8:0 r' > /sys/fs/cgroup/devices/devices.allow 2>/dev/null \
        && echo "devices_allow: ok" || echo "devices_allow: refused"
fi
rmdir "$d"
"""


def config(key: str) -> str:
    text = EXAMPLE.read_text()
    return text.replace("\ndefaults:\n", f"\ndefaults:\n  ssh_keys: [{key!r}]\n", 1)


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    """One lab, its container applied with the owner's key."""
    subprocess.run([*FJORD, "image", "build", "-c", str(EXAMPLE), "--for-labs"], check=True,
                   cwd=REPO, capture_output=True, timeout=900)
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        lab.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                  "/root/.ssh/id_ed25519"])
        key = lab.exec(["cat", "/root/.ssh/id_ed25519.pub"]).stdout.strip()
        lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
                 input=config(key))
        out = subprocess.run(lab.exec_argv([*FJORD, "apply", "--yes"]), capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 120  # apply returns before sshd listens
        while tenant(lab, ["true"]).returncode != 0:
            assert time.monotonic() < deadline, "no SSH login into the container"
            time.sleep(0.5)
        yield lab
    finally:
        lab.down()


def tenant(lab: Lab, argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """ARGV as root in the container, logged in over SSH (a tenant's position)."""
    return lab.exec(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "LogLevel=ERROR", f"root@{CT4}", *argv],
                    input=stdin, check=False, timeout=60)


def results(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in text.splitlines() if ":" in line)}


def test_root_in_a_container_cannot_reach_the_host_kernel(lab: Lab) -> None:
    out = tenant(lab, ["perl", "-"], PROBES)
    assert out.returncode == 0, out.stdout + out.stderr
    got = results(out.stdout)
    print(f"\n{json.dumps(got, indent=1)}")
    # the escape: the host's root cgroup (and on v1 its release_agent) opened by handle
    assert got["open_by_handle_at"] == "Operation not permitted", got
    assert got["root_by_handle"] != "ok" and "release_agent" not in got, got
    for call in ("syslog", "kexec_load", "kexec_file_load", "finit_module", "keyctl", "bpf",
                 "iopl", "mknod"):
        assert got[call] == "Operation not permitted", (call, got)
    # the same from the shell: dmesg reads nothing of the host's kernel log
    dmesg = tenant(lab, ["dmesg"])
    assert dmesg.returncode != 0 and "Operation not permitted" in dmesg.stderr, dmesg


def test_the_container_still_works_and_the_check_says_what_it_has(lab: Lab) -> None:
    status = tenant(lab, ["systemctl", "is-system-running", "--wait"])
    assert status.stdout.strip() == "running", status.stdout + status.stderr
    failed = tenant(lab, ["systemctl", "--failed", "--no-legend", "--plain"])
    assert failed.returncode == 0 and failed.stdout.strip() == "", failed.stdout
    # the usual tools of a tenant: ping, apt's own checks, su to a user and back
    assert tenant(lab, ["ping", "-c1", "-W2", "198.51.100.10"]).returncode == 0
    assert tenant(lab, ["apt-get", "check"]).returncode == 0
    su = tenant(lab, ["su -s /bin/sh nobody -c 'id -u'"])  # ssh runs it with a shell
    assert su.stdout.strip() == "65534", su.stdout + su.stderr
    # PID 1 and a login shell: a filter in force, none of the dropped capabilities
    status1 = tenant(lab, ["grep -E '^(Seccomp|CapBnd):' /proc/1/status /proc/self/status"]
                     ).stdout
    assert status1.count("Seccomp:\t2") == 2, status1
    out = fjord(lab, "check", "--json", check=False)
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    line = checks["container test: syscall filter and capabilities"]
    assert line["ok"], line
    assert not [n for n, c in checks.items() if not c["ok"]], checks
    status = json.loads(fjord(lab, "status", "--json").stdout)
    assert "syscall filter" in json.dumps(status), status
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []


def test_fresh_mounts_give_nothing_writable_that_matters(lab: Lab) -> None:
    out = tenant(lab, ["sh", "-s"], OPEN)
    got = results(out.stdout)
    print(f"\n{json.dumps(got, indent=1)}")
    assert all(v != "ok" for v in got.values()), got
