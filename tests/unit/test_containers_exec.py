"""`fjord container exec`'s parts that need no container: the init's capabilities read
from its status, the helper's command line, and fjord's relay of pipes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from told import tell

from fjord.containers import nsexec
from fjord.containers.lifecycle import container_env
from fjord.containers.relay import Relay

STATUS = """Name:\tsystemd
CapInh:\t0000000000000000
CapPrm:\t000001fdb4feffff
CapEff:\t000001fdb4feffff
CapBnd:\t000001fdb4feffff
CapAmb:\t0000000000000000
"""


def test_capabilities_of_the_init_from_its_status():
    bnd, eff = nsexec.status_caps(STATUS)
    assert bnd == eff == 0x1FDB4FEFFFF
    assert 16 not in nsexec.caps_names(bnd)        # CAP_SYS_MODULE: libvirt drops it
    assert 21 in nsexec.caps_names(bnd)            # CAP_SYS_ADMIN: kept
    with pytest.raises(nsexec.EnterError):
        nsexec.status_caps("Name:\tx\n")


def test_target_enters_the_user_namespace_only_when_it_differs(tmp_path: Path):
    proc = tmp_path / "proc"
    for pid in ("7", "self"):
        (proc / pid / "ns").mkdir(parents=True)
    (proc / "7" / "status").write_text(STATUS.replace("CapEff:\t000001fdb4feffff",
                                                      "CapEff:\t00000000000000ff"))
    (proc / "7" / "ns" / "user").write_text("theirs")
    (proc / "self" / "ns" / "user").write_text("ours")
    t = nsexec.target(7, proc)
    assert t.caps == 0xFF and t.user_namespace
    (proc / "7" / "ns" / "user").unlink()
    os.link(proc / "self" / "ns" / "user", proc / "7" / "ns" / "user")
    assert not nsexec.target(7, proc).user_namespace
    with pytest.raises(nsexec.EnterError, match="gone"):
        nsexec.target(9, proc)


def test_helper_command_line_and_usage():
    argv = nsexec.helper_argv(42, ["sh", "-c", "exit 7"], tty=True)
    assert argv[1:] == ["-I", "-m", "fjord.containers.nsexec", "--pid", "42", "--tty",
                        "--", "sh", "-c", "exit 7"]
    assert nsexec.main(["--pid", "42"]) == 2
    assert nsexec.main(["--bogus", "--", "true"]) == 2


def test_the_environment_is_fjords_not_the_operators(monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent")
    tell(monkeypatch, TERM="screen")
    assert set(container_env()) == set(nsexec.ENVIRONMENT)
    assert container_env()["TERM"] == "dumb"
    assert container_env(tty=True)["TERM"] == "screen"


def _relay(argv: list[str], data: bytes, tmp_path: Path) -> tuple[int, bytes, bytes]:
    """Relay ``argv``'s pipes to two files, from a file as fjord's stdin."""
    src = tmp_path / "in"
    src.write_bytes(data)
    out, err = tmp_path / "out", tmp_path / "err"
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    fds = [os.dup(f.fileno()) for f in (proc.stdin, proc.stdout, proc.stderr)]
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    proc.stdin = proc.stdout = proc.stderr = None
    with open(src, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
        code = Relay(proc, [(fds[1], o.fileno()), (fds[2], e.fileno())],
                     (i.fileno(), fds[0]), None).run()
    return code, out.read_bytes(), err.read_bytes()


def test_relay_passes_input_output_and_status(tmp_path: Path):
    big = b"".join(b"line %d\n" % i for i in range(100000))
    assert _relay(["cat"], big, tmp_path) == (0, big, b"")
    code, out, err = _relay(["sh", "-c", "read x; echo got $x; echo e >&2; exit 7"],
                            b"hi\n", tmp_path)
    assert (code, out, err) == (7, b"got hi\n", b"e\n")
    # a command that does not read its input still ends
    assert _relay(["true"], big, tmp_path)[0] == 0


def test_relay_when_the_command_stops_reading(tmp_path: Path):
    big = b"x" * (8 << 20)
    code, out, _ = _relay(["sh", "-c", "head -c 10 >/dev/null; echo done"], big, tmp_path)
    assert (code, out) == (0, b"done\n")
