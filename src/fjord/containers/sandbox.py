"""What root in a container may ask of the host's kernel: fewer capabilities, and a
syscall filter (issue 14).

Without a user namespace the container's root is the host's root, less what libvirt
takes away. Two layers narrow that:

- **Capabilities** (:data:`DROPPED`): the domain's ``<features><capabilities
  policy='default'>`` turns off those libvirt 9 knows (:data:`LIBVIRT_OFF`); fjord-init
  drops the newer ones it does not (:data:`INIT_OFF`: audit_read, perfmon, bpf,
  checkpoint_restore) from the bounding set before it becomes /sbin/init. Every process
  of the container descends from that init: none can get them back.
- **A seccomp filter** (:func:`bpf_program`, a classic BPF program fjord writes into the
  container's root as :data:`FILTER_PATH`): calls that reach the host's kernel as a
  whole (open_by_handle_at, kexec, modules, keyrings, bpf, perf, port I/O, swap,
  accounting, the kernel log, io_uring) fail with EPERM (io_uring: ENOSYS, so that
  programs fall back to plain calls). Non-native system calls (i386's int 0x80, x32)
  fail with ENOSYS. libvirt's LXC driver has no seccomp setting, so fjord-init installs
  it: its last step runs :data:`LOADER_PATH` (perl: perl-base is Essential in Debian,
  and its ``syscall()`` reaches prctl and seccomp), which drops :data:`INIT_OFF`,
  installs the filter and execs /sbin/init. The filter is inherited by every process
  of the container; no_new_privs is left unset (su and sudo keep working), which is
  allowed because the init still has CAP_SYS_ADMIN.

When a step fails the boot goes on (a container that does not start is an outage, a
failure here is a fault of the host, not of the tenant), the console says why, and the
outcome is left in PID 1's environment (``FJORD_SECCOMP=installed`` or ``failed:
WHY``): `fjord check` and `fjord status` read PID 1's ``/proc/1/status`` (``Seccomp:
2``, ``CapBnd``) and say ✗ with that reason (:func:`privileges_dropped`).

Not a boundary on its own: root keeps CAP_SYS_ADMIN (systemd needs it to mount its
API filesystems), so it can still mount a fresh proc or sysfs, a new cgroup v1
hierarchy, or grant itself devices in its devices cgroup; only a user namespace takes
those away.
"""

from __future__ import annotations

import struct
from pathlib import Path

from fjord.containers import guest

# Capabilities the domain turns off, with why (libvirt's names). Kept, and why:
# sys_admin (systemd mounts /run, /dev/shm, cgroups; PrivateTmp=...: only a user
# namespace makes it harmless), net_admin and net_raw (the container's own network
# namespace: addresses, routes, ping), sys_boot (reboot(2) in a PID namespace ends only
# the container, and libvirt relies on it to see a shutdown), setpcap (systemd narrows
# services' bounding sets), sys_chroot (sshd's privilege separation), setfcap (dpkg
# installs file capabilities), audit_write (login, sshd), sys_tty_config (getty's
# vhangup), kill, chown, dac_override, fowner, fsetid, setuid, setgid, ipc_lock,
# ipc_owner, lease, net_bind_service, net_broadcast.
LIBVIRT_OFF: dict[str, str] = {
    "audit_control": "audit rules and the audit daemon are the host's",
    "block_suspend": "blocks the host's suspend",
    "dac_read_search": "open_by_handle_at: opens any file of a mounted filesystem by "
                       "handle, the host's root cgroup and release_agent included",
    "linux_immutable": "immutable files in its root would make the host's cleanup fail",
    "mac_admin": "the host's LSM policy",
    "mac_override": "the host's LSM policy",
    "mknod": "device nodes: libvirt makes those a container has",
    "sys_module": "kernel modules",
    "sys_nice": "real-time priorities starve the host's CPUs past cpu shares",
    "sys_pacct": "process accounting is host-wide",
    "sys_ptrace": "ptrace of processes entered from the host (`fjord container exec`), "
                  "which keep every capability",
    "sys_rawio": "port I/O, /dev/mem, raw SCSI commands",
    "sys_resource": "ext4's reserved blocks, rlimits past the hard limit",
    "sys_time": "the clock is the host's",
    "syslog": "the host's kernel log (dmesg)",
    "wake_alarm": "wakes the host from suspend",
}
# Newer than libvirt 9's list (Linux number, name): fjord-init drops them itself.
INIT_OFF: dict[int, str] = {
    37: "audit_read",          # reads the host's audit log
    38: "perfmon",             # perf events of the host
    39: "bpf",                 # BPF programs and maps
    40: "checkpoint_restore",  # set_tid, map_files of other processes
}
CAP_NUMBERS = {
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4,
    "kill": 5, "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9,
    "net_bind_service": 10, "net_broadcast": 11, "net_admin": 12, "net_raw": 13,
    "ipc_lock": 14, "ipc_owner": 15, "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18,
    "sys_ptrace": 19, "sys_pacct": 20, "sys_admin": 21, "sys_boot": 22, "sys_nice": 23,
    "sys_resource": 24, "sys_time": 25, "sys_tty_config": 26, "mknod": 27, "lease": 28,
    "audit_write": 29, "audit_control": 30, "setfcap": 31, "mac_override": 32,
    "mac_admin": 33, "syslog": 34, "wake_alarm": 35, "block_suspend": 36,
    **{name: n for n, name in INIT_OFF.items()},
}
DROPPED = sorted([*LIBVIRT_OFF, *INIT_OFF.values()], key=CAP_NUMBERS.__getitem__)

FILTER_PATH = "/usr/local/lib/fjord/seccomp.bpf"
LOADER_PATH = "/usr/local/lib/fjord/fjord-seccomp"
MARKER = "FJORD_SECCOMP"
INIT_MARKER = "FJORD_INIT"  # what fjord-init itself leaves (fjord.containers.limits)

# --- the filter ------------------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000
EPERM, ENOSYS = 1, 38
# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl) of the calls denied.
DENIED_X86_64: dict[str, int] = {
    "syslog": 103, "uselib": 134, "_sysctl": 156, "acct": 163, "swapon": 167,
    "swapoff": 168, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "perf_event_open": 298, "open_by_handle_at": 304,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
}
# Denied with ENOSYS: programs that can use them fall back to plain calls.
UNSUPPORTED_X86_64: dict[str, int] = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}
# Debian architectures fjord has a table for (the filter is the host's architecture's).
ARCHITECTURES = ("amd64",)
# prctl and seccomp on x86_64, for the loader.
_PRCTL, _SECCOMP = 157, 317

# classic BPF (linux/filter.h, linux/seccomp.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def bpf_program(denied: dict[str, int] | None = None,
                unsupported: dict[str, int] | None = None) -> bytes:
    """The filter, as the kernel takes it: struct sock_filter[] (8 bytes each)."""
    deny = sorted(set((denied if denied is not None else DENIED_X86_64).values()))
    nosys = sorted(set((unsupported if unsupported is not None
                        else UNSUPPORTED_X86_64).values()))
    # layout: arch check, x32 check, one jeq per call, then allow, EPERM, ENOSYS
    body = [_insn(_LD_W_ABS, _ARCH)]
    n = len(deny) + len(nosys)
    # instructions after the arch test, up to "ret ENOSYS": ld nr, jge x32, n jeq,
    # allow, eperm
    body.append(_insn(_JEQ_K, AUDIT_ARCH_X86_64, 0, 2 + n + 2))
    body.append(_insn(_LD_W_ABS, _NR))
    body.append(_insn(_JGE_K, X32_BIT, n + 2, 0))
    for i, nr in enumerate(deny):
        # from jeq number i (0-based) to "ret EPERM": the rest of the jeqs, then allow
        body.append(_insn(_JEQ_K, nr, n - i, 0))
    for i, nr in enumerate(nosys, start=len(deny)):
        body.append(_insn(_JEQ_K, nr, n - i + 1, 0))
    body.append(_insn(_RET_K, _RET_ALLOW))
    body.append(_insn(_RET_K, _RET_ERRNO | EPERM))
    body.append(_insn(_RET_K, _RET_ERRNO | ENOSYS))
    if len(body) > 255:
        raise ValueError("the filter's jumps do not fit in 8 bits")
    return b"".join(body)


def loader_script() -> str:
    """fjord-seccomp (``fjord/containers/guest/fjord-seccomp.pl``), in perl:
    ``fjord-seccomp FILTER INIT ARGS...`` drops
    :data:`INIT_OFF` from the bounding set, installs FILTER, and becomes INIT whatever
    happened, with the outcome in its environment (FJORD_SECCOMP)."""
    return guest.render(
        "fjord-seccomp.pl",
        capability_names=guest.safe_words(list(INIT_OFF.values()), ", "),
        capabilities=", ".join(str(int(n)) for n in sorted(INIT_OFF)),
        prctl=str(int(_PRCTL)), seccomp=str(int(_SECCOMP)),
        marker=guest.safe_words([MARKER]))


# --- the check -------------------------------------------------------------------------

SANDBOX_DOC = "see docs/containers.md: capabilities and syscall filter"


def _status(pid: int, root: Path) -> dict[str, str]:
    text = (root / "proc" / str(pid) / "status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def environ_value(pid: int, key: str, root: Path = Path("/")) -> str | None:
    """``key`` in the environment of process ``pid`` (None: absent, or no such process):
    how fjord-init and its loader say what they did."""
    try:
        data = (root / "proc" / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name == key.encode():
            return value.decode(errors="replace")
    return None


def marker(pid: int, root: Path = Path("/")) -> str | None:
    """What fjord-seccomp left in PID 1's environment (None: it did not run)."""
    return environ_value(pid, MARKER, root)


def privileges_dropped(name: str, pid: int, root: Path = Path("/")) -> tuple[bool, str]:
    """Whether the container whose PID 1 is ``pid`` runs under a syscall filter and
    without any of :data:`DROPPED` in its bounding set; one line saying so, or why not."""
    status = _status(pid, root)
    bounding = int(status.get("CapBnd", "0"), 16)
    kept = [c for c in DROPPED if bounding >> CAP_NUMBERS[c] & 1]
    mode = status.get("Seccomp", "0")
    problems = []
    if mode != "2":
        why = marker(pid, root)
        if why is None:
            outcome = environ_value(pid, INIT_MARKER, root)
            why = ("fjord-init did not run its loader (an older fjord-init, or another "
                   "init)" if outcome is not None else "fjord-init did not run")
        problems.append(f"syscall filter not installed ({why})")
    if kept:
        problems.append(f"its root keeps {', '.join(kept)}")
    if problems:
        return False, (f"{'; '.join(problems)}: restart it (fjord container restart "
                       f"{name}) after `fjord apply`")
    left = bin(bounding).count("1")
    return True, (f"syscall filter installed ({status.get('Seccomp_filters', '?')} "
                  f"filter(s)); {left} capabilities, none of the {len(DROPPED)} dropped")
