"""The capabilities a container's root loses and its syscall filter (issue 14): the BPF
program run by a small interpreter, the perl loader run for real, the domain XML, and
the check line."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fjord.containers import sandbox
from fjord.containers.domain import Domain, differences
from fjord.containers.sandbox import (
    AUDIT_ARCH_X86_64,
    CAP_NUMBERS,
    DROPPED,
    bpf_program,
    loader_script,
    privileges_dropped,
)

AUDIT_ARCH_I386 = 0x40000003
ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026


def run_bpf(prog: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """What classic BPF program ``prog`` returns for a call (the subset seccomp uses)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *([0] * 6))
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:    # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        elif code in (0x15, 0x35):  # jeq / jge k
            hit = acc == k if code == 0x15 else acc >= k
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


def test_the_filter_denies_the_listed_calls_and_allows_the_rest():
    prog = bpf_program()
    for name, nr in sandbox.DENIED_X86_64.items():
        assert run_bpf(prog, nr) == EPERM, name
    for nr in sandbox.UNSUPPORTED_X86_64.values():
        assert run_bpf(prog, nr) == ENOSYS
    # read, openat, mount, reboot, ptrace, name_to_handle_at, seccomp, prctl: allowed
    for nr in (0, 257, 165, 169, 101, 303, 317, 157, 59, 435):
        assert run_bpf(prog, nr) == ALLOW, nr
    # the x32 ABI and i386's int 0x80 get nothing, open_by_handle_at included
    assert run_bpf(prog, 0x40000000 | 304) == ENOSYS
    assert run_bpf(prog, 0x40000000) == ENOSYS
    assert run_bpf(prog, 342, arch=AUDIT_ARCH_I386) == ENOSYS
    assert run_bpf(prog, 3, arch=AUDIT_ARCH_I386) == ENOSYS


def test_a_program_of_any_size_jumps_right():
    for n in (0, 1, 7, 60):
        prog = bpf_program({f"c{i}": 1000 + i for i in range(n)}, {"u": 2000})
        for i in range(n):
            assert run_bpf(prog, 1000 + i) == EPERM
        assert run_bpf(prog, 2000) == ENOSYS and run_bpf(prog, 999) == ALLOW


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("perl") is None or os.uname().machine != "x86_64",
    reason="installs a seccomp filter without no_new_privs: root, perl, x86_64")


@needs_root
def test_the_loader_drops_installs_and_becomes_the_init(tmp_path: Path):
    loader, filt = tmp_path / "fjord-seccomp", tmp_path / "seccomp.bpf"
    loader.write_text(loader_script())
    filt.write_bytes(bpf_program())
    probe = ('my $k = syscall(250, 0, -4, 0); print $k == -1 ? "$!" : "ok"; '
             'print "|$ENV{FJORD_SECCOMP}|"; open(my $s, "<", "/proc/self/status"); '
             'print grep { /^(Seccomp|CapBnd):/ } <$s>;')
    out = subprocess.run(["perl", str(loader), str(filt), "/usr/bin/perl", "-e", probe],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("Operation not permitted|installed|"), out.stdout
    fields = dict(line.split(":\t") for line in out.stdout.split("|")[2].splitlines())
    assert fields["Seccomp"] == "2"
    bounding = int(fields["CapBnd"], 16)
    for n in sandbox.INIT_OFF:
        assert not bounding >> n & 1
    # a bad filter: said, recorded, and the init still runs
    filt.write_bytes(b"short")
    out = subprocess.run(["perl", str(loader), str(filt), "/usr/bin/perl", "-e", probe],
                         capture_output=True, text=True, timeout=30)
    assert "fjord-init: " in out.stderr and "is not a BPF program" in out.stderr
    assert out.stdout.startswith("ok|failed: ") and "Seccomp:\t0" in out.stdout


def test_the_loader_is_valid_perl(tmp_path: Path):
    if shutil.which("perl") is None:
        pytest.skip("no perl")
    path = tmp_path / "fjord-seccomp"
    path.write_text(loader_script())
    assert subprocess.run(["perl", "-c", str(path)], capture_output=True).returncode == 0


LIBVIRT_XML = """<domain type='lxc' id='4'>
  <name>test</name><uuid>u</uuid>
  <memory unit='KiB'>524288</memory><vcpu placement='static'>1</vcpu>
  <cputune><shares>1024</shares></cputune>
  <os><type arch='x86_64'>exe</type><init>/usr/local/sbin/fjord-init</init></os>
  {features}
  <devices><filesystem type='mount' accessmode='passthrough'><source dir='/r'/>
  <target dir='/'/></filesystem><filesystem type='mount' accessmode='passthrough'>
  <source dir='/var/lib/lxcfs'/><target dir='/var/lib/lxcfs'/><readonly/></filesystem>
  <console type='pty'><target type='lxc' port='0'/>
  </console></devices>
</domain>"""


def test_the_domain_turns_capabilities_off_and_reads_them_back():
    wanted = Domain("test", "u", 512 << 20, 1, 1024, "/r")
    assert set(wanted.caps_off) == set(sandbox.LIBVIRT_OFF)
    caps = "".join(f"<{c} state='off'/>" for c in reversed(wanted.caps_off))
    same = Domain.parse(LIBVIRT_XML.format(
        features=f"<features><capabilities policy='default'>{caps}</capabilities>"
                 "</features>"))
    assert differences(same, wanted) == []
    old = Domain.parse(LIBVIRT_XML.format(features=""))
    diff = differences(old, wanted)
    assert diff == [f"capabilities: turn off {', '.join(sorted(sandbox.LIBVIRT_OFF))}"]
    # one turned back on by hand: said, and redefined
    caps = "".join(f"<{c} state='off'/>" for c in wanted.caps_off if c != "sys_ptrace")
    hand = Domain.parse(LIBVIRT_XML.format(
        features=f"<features><capabilities policy='default'>{caps}<sys_ptrace state='on'/>"
                 "</capabilities></features>"))
    assert differences(hand, wanted) == ["capabilities: turn off sys_ptrace"]


def fake_init(root: Path, *, seccomp: str, bounding: int, env: bytes = b"") -> None:
    d = root / "proc/561"
    d.mkdir(parents=True, exist_ok=True)
    (d / "status").write_text(f"Name:\tsystemd\nCapBnd:\t{bounding:016x}\n"
                              f"NoNewPrivs:\t0\nSeccomp:\t{seccomp}\nSeccomp_filters:\t1\n")
    (d / "environ").write_bytes(b"container=lxc-libvirt\0" + env)


def test_the_check_says_filter_and_capabilities(tmp_path: Path):
    full = (1 << 41) - 1
    expected = full & ~sum(1 << CAP_NUMBERS[c] for c in DROPPED)
    fake_init(tmp_path, seccomp="2", bounding=expected,
              env=b"FJORD_INIT=cgroupns\0FJORD_SECCOMP=installed\0")
    ok, detail = privileges_dropped("test", 561, tmp_path)
    assert ok and detail == (f"syscall filter installed (1 filter(s)); {41 - len(DROPPED)} "
                             f"capabilities, none of the {len(DROPPED)} dropped")
    # an older fjord-init: no filter, every capability
    fake_init(tmp_path, seccomp="0", bounding=full, env=b"FJORD_INIT=cgroupns\0")
    ok, detail = privileges_dropped("test", 561, tmp_path)
    assert not ok and detail.startswith("syscall filter not installed (fjord-init did not "
                                        "run its loader")
    assert "its root keeps dac_read_search, linux_immutable, " in detail
    assert "fjord container restart test" in detail
    # the loader said why
    fake_init(tmp_path, seccomp="0", bounding=expected,
              env=b"FJORD_SECCOMP=failed: cannot install the syscall filter: Invalid\0")
    ok, detail = privileges_dropped("test", 561, tmp_path)
    assert not ok and "(failed: cannot install the syscall filter: Invalid)" in detail
