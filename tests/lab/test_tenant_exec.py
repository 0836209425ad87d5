"""`fjord container exec` against the tenant (issue 14, item 3): root in the container must
not reach the operator's terminal (TIOCSTI on /proc/PID/fd/0 of the exec'd command),
nor get more capabilities, another cgroup or a host descriptor through it; scripts keep
their input, output and exit status."""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import FJORD, fjord

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples" / "lab.yaml")
MARKER = "fjordpwned4821"

# The operator's shell: it takes the terminal (its standard input) as controlling
# terminal, runs the command given, then reports what is waiting as its input (what a
# shell would read and run next), in hex so that the terminal's echo cannot fake it.
OPERATOR = """
import fcntl, os, select, subprocess, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
rc = subprocess.run(sys.argv[1:]).returncode
attrs = termios.tcgetattr(0)
attrs[3] &= ~(termios.ICANON | termios.ECHO)
termios.tcsetattr(0, termios.TCSANOW, attrs)
pending = b""
while select.select([0], [], [], 0.5)[0]:
    data = os.read(0, 4096)
    if not data:
        break
    pending += data
os.write(1, b"\\nREPORT rc=%d pending=%s\\n" % (rc, pending.hex().encode()))
"""

# The tenant: waits for the operator's command (`sleep 987`) to show up in the container,
# pushes a command line into its standard input with TIOCSTI, says what its standard
# input is (device numbers), then ends it.
TENANT = r"""
my ($pid, $tries);
for $tries (1..600) {
    opendir(my $d, "/proc") or die;
    for my $p (grep { /^\d+$/ } readdir($d)) {
        open(my $c, "<", "/proc/$p/cmdline") or next;
        local $/; my $cmd = <$c>;
        if (defined $cmd && $cmd eq "sleep\0" . "987\0") { $pid = $p; last }
    }
    last if $pid;
    select(undef, undef, undef, 0.1);
}
die "no sleep 987\n" unless $pid;
my @st = stat("/proc/$pid/fd/0");
print "rdev=$st[6]\n";
# an unprivileged container's root cannot even open it (the pty is a host id's)
my $t;
unless (open($t, "+<", "/proc/$pid/fd/0")) {
    print "open=refused: $!\n";
    kill "KILL", $pid;
    exit 0;
}
my $ok = 1;
for my $ch (split //, "touch /tmp/MARKER\n") { ioctl($t, 0x5412, $ch) or $ok = 0 }
print "injected=$ok\n";
kill "KILL", $pid;
"""


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    subprocess.run([*FJORD, "image", "build", "-c", EXAMPLE, "--for-labs"], check=True,
                   cwd=REPO, capture_output=True, timeout=900)
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=EXAMPLE, provider="bridged", owner=os.getpid())
        fjord(lab, "apply", "-c", EXAMPLE, "--yes", timeout=900)
        yield lab
    finally:
        lab.down()


def _exec(lab: Lab, *argv: str, input: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lab.exec_argv([*FJORD, "container", "exec", "test", "--", *argv]),
                          input=input, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_tenant_cannot_push_input_into_the_operators_terminal(lab: Lab) -> None:
    master, slave = os.openpty()
    operator_tty = os.fstat(slave).st_rdev
    command = lab.exec_argv([*FJORD, "container", "exec", "test", "--", "sleep", "987"])
    shell = subprocess.Popen([sys.executable, "-c", OPERATOR, *command], stdin=slave,
                             stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        tenant = _exec(lab, "perl", "-e", TENANT.replace("MARKER", MARKER))
        assert tenant.returncode == 0, tenant.stdout + tenant.stderr
        assert shell.wait(timeout=120) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    reader.join(timeout=10)
    os.close(master)
    report = bytes(seen).decode(errors="replace").rsplit("REPORT ", 1)
    assert len(report) == 2, bytes(seen)
    pending = bytes.fromhex(report[1].split("pending=", 1)[1].split("\n")[0].strip())
    # nothing of the tenant's waits as the operator's shell's next input ...
    assert MARKER.encode() not in pending, pending
    # ... because the command's standard input was not the operator's terminal
    rdev = int(tenant.stdout.split("rdev=", 1)[1].split()[0])
    assert rdev != operator_tty
    assert not lab.exec(["test", "-e", f"/tmp/{MARKER}"], check=False).ok


def _caps(text: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in text.splitlines()
                                       if line.startswith("Cap"))}


def test_the_command_has_no_more_than_the_containers_init(lab: Lab) -> None:
    out = _exec(lab, "sh", "-c", "grep -e ^Cap -e ^Seccomp: /proc/1/status; echo ---; "
                "grep -e ^Cap -e ^Seccomp: /proc/self/status; echo ---; cat /proc/1/cgroup; "
                "echo ---; "
                "cat /proc/self/cgroup; echo ---; readlink /proc/1/ns/user "
                "/proc/self/ns/user /proc/1/ns/cgroup /proc/self/ns/cgroup")
    assert out.returncode == 0, out.stderr
    init, mine, init_cg, my_cg, ns = out.stdout.split("---\n")
    init_caps, my_caps = _caps(init), _caps(mine)
    host = _caps(lab.exec(["grep", "^Cap", "/proc/self/status"]).stdout)
    assert host["CapBnd"] & ~init_caps["CapBnd"], "the container's init has all caps?"
    for what in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert my_caps[what] & ~(init_caps["CapBnd"] & init_caps["CapEff"]) == 0, what
    # the container's syscall filter: the init has it, and so has the command
    assert "Seccomp:\t2" in init, init
    assert "Seccomp:\t2" in mine, mine
    # the same cgroups as the init (the hierarchies mounted on the host: the lab has
    # no cgroup2 mount, so that line is left out) and the same namespaces
    def v1(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("0::")]

    assert v1(my_cg) == v1(init_cg) and v1(init_cg)
    links = ns.split()
    assert links[0] == links[1] and links[2] == links[3]


def test_scripts_keep_input_output_and_exit_status(lab: Lab) -> None:
    assert _exec(lab, "cat", input="hi\n").stdout == "hi\n"
    big = "".join(f"line {i}\n" for i in range(20000))
    assert _exec(lab, "cat", input=big).stdout == big
    assert _exec(lab, "sh", "-c", "exit 7").returncode == 7
    err = _exec(lab, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (err.returncode, err.stdout, err.stderr) == (3, "out\n", "err\n")
    missing = _exec(lab, "no-such-program")
    assert missing.returncode == 127 and "no-such-program" in missing.stderr


def test_no_descriptor_and_no_environment_of_the_hosts(lab: Lab) -> None:
    out = _exec(lab, "sh", "-c", "ls /proc/self/fd; echo ---; env",
                env={"SSH_AUTH_SOCK": "/tmp/agent.sock", "FJORD_SECRET": "s3cr3t"})
    assert out.returncode == 0, out.stderr
    fds, env = out.stdout.split("---\n")
    assert sorted(fds.split()) == ["0", "1", "2", "3"]     # 3: ls's own directory
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert "SSH_AUTH_SOCK" not in names and "FJORD_SECRET" not in names
    assert {"PATH", "HOME", "TERM"} <= names
    kinds = _exec(lab, "sh", "-c", "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2")
    assert all(k.startswith("pipe:") for k in kinds.stdout.split()), kinds.stdout


def test_a_terminal_is_a_new_pseudo_terminal_relayed_by_fjord(lab: Lab) -> None:
    master, slave = os.openpty()
    termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(slave))
    before = termios.tcgetattr(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    command = lab.exec_argv([*FJORD, "container", "exec", "test", "--", "sh", "-c",
                             "stty size; test -t 0 && echo is-a-tty; echo ready; "
                             "read x; echo got:$x"])
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    seen = bytearray()
    os.set_blocking(master, True)
    while b"ready" not in seen and proc.poll() is None:
        seen.extend(os.read(master, 4096))
    os.write(master, b"hello\r")
    assert proc.wait(timeout=60) == 0
    os.set_blocking(master, False)
    try:
        while True:
            seen.extend(os.read(master, 4096))
    except OSError:
        pass
    text = bytes(seen).decode(errors="replace").replace("\r", "")
    assert "33 111" in text, text
    assert "is-a-tty" in text and "got:hello" in text, text
    after = termios.tcgetattr(slave)
    assert after == before, "the operator's terminal was left in raw mode"
    os.close(slave)
    os.close(master)


# every descriptor of every process in the container that is the device ARGV[0]
HOLDERS = r"""
my $want = $ARGV[0]; my $n = 0;
for my $fd (glob("/proc/[0-9]*/fd/*")) {
    my @st = stat($fd) or next;
    if ($st[6] == $want) { print "holder $fd\n"; $n++ }
}
print "scanned\n";
"""


def test_console_keeps_the_operators_terminal_on_the_host(lab: Lab) -> None:
    """`fjord container console` (virsh console): libvirt's controller holds the
    console's pseudo-terminal; no process in the container has the operator's."""
    master, slave = os.openpty()
    operator_tty = os.fstat(slave).st_rdev
    proc = subprocess.Popen(lab.exec_argv([*FJORD, "container", "console", "test"]),
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    try:
        while b"Escape character" not in seen and proc.poll() is None:
            try:
                seen.extend(os.read(master, 4096))
            except OSError:
                break
        assert b"Escape character" in seen, bytes(seen)
        holders = _exec(lab, "perl", "-e", HOLDERS, str(operator_tty))
        assert "scanned" in holders.stdout, holders.stderr
        assert "holder" not in holders.stdout, holders.stdout
        os.write(master, b"\x1d")                  # Ctrl-]: leave the console
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
