"""`fjord --host`: host specs, the marker in a stream, the command line sent, and the
whole round trip through a stand-in for ssh that runs the remote command line here with
sh (what a server's login shell does with it). The lab test (tests/lab/test_remote.py)
does it with a real OpenSSH server and a real switchover."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from fjord import remote
from fjord.cli import cli, install_environment
from fjord.errors import FjordError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = str(Path(sys.executable).parent / "fjord")


@pytest.mark.parametrize(("spec", "user", "name", "port"), [
    ("203.0.113.7", None, "203.0.113.7", None),
    ("root@203.0.113.7", "root", "203.0.113.7", None),
    ("admin@oslo.example.net:2222", "admin", "oslo.example.net", 2222),
    ("root@[2001:db8::2]:22", "root", "2001:db8::2", 22),
    ("2001:db8::2", None, "2001:db8::2", None),
    ("[2001:db8::2]", None, "2001:db8::2", None),
    ("myserver", None, "myserver", None),  # an alias of ~/.ssh/config
])
def test_host_specs(spec: str, user: str | None, name: str, port: int | None) -> None:
    host = remote.parse_host(spec)
    assert (host.user, host.name, host.port) == (user, name, port)


@pytest.mark.parametrize("spec", ["", "root@", "-oProxyCommand=x", "root@-p", "a b",
                                  "root@host:0", "root@host:99999", "root@host:ssh",
                                  "[2001:db8::2", "[::1]x", "ro ot@host", "h;rm -rf /"])
def test_bad_host_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(FjordError) as exc:
        remote.parse_host(spec)
    assert exc.value.exit_code == 2
    assert "[user@]server[:port]" in (exc.value.hint or "")


def test_ssh_argv_quotes_every_word_and_fresh_connections_are_not_multiplexed() -> None:
    host = remote.parse_host("root@[2001:db8::2]:2222")
    argv = remote.ssh_argv(host, ["fjord", "plan", "-c", "a b'c;$(x)"], fresh=True)
    assert argv[:2] == ["ssh", "-T"]
    assert argv[argv.index("-p") + 1] == "2222"
    for opt in ("ControlPath=none", "ControlMaster=no"):
        assert opt in argv
    assert argv[-3:-1] == ["--", "root@2001:db8::2"]
    assert argv[-1] == "fjord plan -c 'a b'\"'\"'c;$(x)'"
    out = subprocess.run(["sh", "-c", "printf '%s\\n' " + argv[-1].split(" ", 3)[3]],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "a b'c;$(x)\n"


def test_fjord_ssh_replaces_the_client() -> None:
    host = remote.parse_host("s")
    env = {"FJORD_SSH": "ssh -F '/my dir/config' -i key"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        install_environment()  # what the command line does with the variables
        argv = remote.ssh_argv(host, ["true"], tty=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    assert argv[:6] == ["ssh", "-F", "/my dir/config", "-i", "key", "-t"]


def _filtered(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    out: list[bytes] = []
    seen: list[bytes] = []
    f = remote.MarkerFilter(out.append, b"MARK:", seen.append)
    for c in chunks:
        f.feed(c)
    f.close()
    return b"".join(out), seen


def test_marker_lines_are_taken_out_of_the_stream_wherever_chunks_split() -> None:
    # on a terminal the marker follows a progress line erased in place (CR, ESC [2K)
    text = (b"plan\r\nApply? [y/N]: y\r\nMARK:60\r\nApplied 3 changes.\nMA\n"
            b"\x1b[32mworking\r\x1b[2KMARK: 30\r\nMARK.\n")
    for size in (1, 2, 3, 5, 7, len(text)):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        out, seen = _filtered(chunks)
        assert out == (b"plan\r\nApply? [y/N]: y\r\nApplied 3 changes.\nMA\n"
                       b"\x1b[32mworking\r\x1b[2KMARK.\n")
        assert seen == [b"MARK:60\r\n", b"MARK: 30\r\n"]


def test_a_prompt_without_newline_is_shown_at_once() -> None:
    out: list[bytes] = []
    f = remote.MarkerFilter(out.append, b"MARK:", lambda _: None)
    f.feed(b"Apply these changes? [y/N]: ")
    assert b"".join(out) == b"Apply these changes? [y/N]: "
    f.feed(b"MA")  # might become the marker: held until it cannot
    assert b"".join(out) == b"Apply these changes? [y/N]: "
    f.feed(b"X")
    assert b"".join(out) == b"Apply these changes? [y/N]: MAX"


def _invocation(*args: str, env: dict[str, str] | None = None) -> remote.Invocation:
    old = os.environ.pop("FJORD_CONFIG", None)
    if env:
        os.environ.update(env)
    try:
        install_environment()  # what the command line does with the variables
        ctx = click.Context(cli, info_name="fjord", obj={"verbose": 0, "debug": False})
        return remote.invocation(cli, ctx, list(args), [])
    finally:
        os.environ.pop("FJORD_CONFIG", None)
        if old is not None:
            os.environ["FJORD_CONFIG"] = old


P = remote.CONFIG_PLACEHOLDER


@pytest.mark.parametrize("form", [["-c", "x.yaml"], ["--config", "x.yaml"],
                                  ["--config=x.yaml"], ["-cx.yaml"]])
def test_the_config_argument_names_the_copy(form: list[str]) -> None:
    inv = _invocation("plan", "--only", "network", *form, "--detailed-exitcode")
    assert inv.config == Path("x.yaml")
    assert inv.args == ["plan", "-c", P, "--only", "network", "--detailed-exitcode"]


def test_fjord_config_is_copied_and_none_means_the_servers_default() -> None:
    inv = _invocation("status", env={"FJORD_CONFIG": "site.yaml"})
    assert inv.config == Path("site.yaml") and inv.args == ["status", "-c", P]
    assert inv.error_code == 3
    bare = _invocation("status")
    assert bare.config is None and bare.args == ["status"]


def test_container_exec_keeps_its_command() -> None:
    inv = _invocation("container", "exec", "web", "--", "ls", "-c", "x")
    assert inv.config is None
    assert inv.args == ["container", "exec", "web", "--", "ls", "-c", "x"]
    inv = _invocation("container", "start", "-c", "f.yaml", "web")
    assert inv.config == Path("f.yaml")
    assert inv.args == ["container", "start", "-c", P, "web"]


def test_apply_waits_for_and_announces_the_confirmation() -> None:
    inv = _invocation("apply", "-c", "f.yaml", "--yes")
    assert inv.args == ["apply", "--announce-confirm", "--confirm-timeout", "60", "-c", P,
                        "--yes"]
    assert inv.confirm_timeout == 60
    inv = _invocation("apply", "--confirm-timeout", "20", "--yes")
    assert inv.args == ["apply", "--announce-confirm", "--confirm-timeout", "20", "--yes"]
    assert inv.confirm_timeout == 20


def test_an_unclear_config_argument_is_refused() -> None:
    with pytest.raises(FjordError) as exc:
        _invocation("apply", "-yc", "f.yaml")
    assert exc.value.exit_code == 2 and "-c FILE" in (exc.value.hint or "")


def test_usage_errors_are_found_here() -> None:
    with pytest.raises(click.UsageError):
        _invocation("plan", "--no-such-option")


# --- the round trip, through a stand-in for ssh -----------------------------------------

FAKE_SSH = """#!/bin/sh
# ssh [options] -- DESTINATION COMMAND-LINE: log the options, run the line here
opts=
for a; do
  [ "$a" = "--" ] && break
  opts="$opts $a"
  case $a in ControlPath=none) fresh=1 ;; esac
done
echo "$opts" >> "$FAKE_SSH_LOG"
if [ -n "$fresh" ] && [ -n "$FAKE_SSH_FAIL_NEW" ]; then
  echo "ssh: connect to host server port 22: Connection timed out" >&2; exit 255
fi
while [ "$1" != "--" ]; do shift; done
exec sh -c "$3"
"""

FAKE_FJORD = """#!/bin/sh
# the server's fjord: its version; apply waits for the marker's confirmation
case "$1" in
  --version) echo "fjord, version VERSION"; exit 0 ;;
  confirm) touch "$FAKE_STATE/confirmed"; echo "Switchover confirmed."; exit 0 ;;
  apply)
    echo "args: $*"; head -n 1 "$(pwd)/$6"
    echo "fjord-remote: waiting for confirmation 60" >&2
    i=0; while [ $i -lt 50 ] && [ ! -e "$FAKE_STATE/confirmed" ]; do sleep 0.1; i=$((i+1)); done
    if [ -e "$FAKE_STATE/confirmed" ]; then echo "Applied 1 change."; exit 0; fi
    echo "fjord: error: switchover rolled back: not confirmed within 60 s" >&2; exit 1 ;;
esac
exit 42
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "fake-ssh"
    ssh.write_text(FAKE_SSH)
    server = tmp_path / "server"
    server.mkdir()
    fjord = server / "fjord"
    fjord.write_text(FAKE_FJORD.replace("VERSION", version("fjord")))
    state = tmp_path / "state"
    state.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for f in (ssh, fjord):
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FJORD_")}
    env.update(FJORD_SSH=str(ssh), FAKE_SSH_LOG=str(tmp_path / "ssh.log"),
               FAKE_STATE=str(state), TMPDIR=str(tmp),
               PATH=f"{server}:{os.environ['PATH']}")
    return env


def _fjord(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FJORD, *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_apply_is_confirmed_over_a_new_connection(world: dict[str, str],
                                                  tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("# my server\nversion: 1\n")
    out = _fjord(world, "--host", "root@server:2222", "apply", "-c", str(config), "--yes")
    assert out.returncode == 0, out.stderr
    assert "args: apply --announce-confirm --confirm-timeout 60 -c site.yaml --yes" in out.stdout
    assert "# my server" in out.stdout  # the file travelled
    assert "Applied 1 change." in out.stdout
    assert "confirmed over a new SSH connection to root@server:2222" in out.stderr
    assert remote.CONFIRM_MARKER not in out.stderr
    connections = Path(world["FAKE_SSH_LOG"]).read_text().splitlines()
    assert len(connections) == 3  # prepare, run, confirm
    assert all("-p 2222 " in c for c in connections)
    assert "ControlPath=none" in connections[2] and "ControlPath=none" not in connections[1]
    assert not list(Path(world["TMPDIR"]).iterdir())  # the copy is gone


def test_a_failed_new_connection_confirms_nothing(world: dict[str, str],
                                                   tmp_path: Path) -> None:
    world["FAKE_SSH_FAIL_NEW"] = "1"
    out = _fjord(world, "--host", "server", "apply", "-c", str(EXAMPLE), "--yes",
                 "--confirm-timeout", "5")
    assert out.returncode == 1
    assert "a new SSH connection to server failed (ssh: connect to host server port 22: " \
           "Connection timed out): not confirmed" in out.stderr
    assert "rolled back" in out.stderr
    assert not Path(world["FAKE_STATE"], "confirmed").exists()


def test_exit_codes_pass_through_and_the_real_fjord_runs(world: dict[str, str],
                                                        tmp_path: Path) -> None:
    world["PATH"] = f"{Path(FJORD).parent}:{world['PATH']}"  # the real fjord on the server
    ok = _fjord(world, "--host", "server", "validate", "-c", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "lab.yaml: valid (1 container)\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhost: {fqdn: x}\n")
    invalid = _fjord(world, "--host", "server", "validate", "-c", str(bad), "--json")
    assert invalid.returncode == 2
    assert "bad.yaml" in invalid.stderr and "nothing was changed" in invalid.stderr
    schema = _fjord({**world, "FJORD_HOST": "server"}, "schema")  # runs here
    assert schema.returncode == 0 and json.loads(schema.stdout)
    lab = _fjord(world, "--host", "server", "lab", "status")
    assert lab.returncode == 2 and "runs on this machine" in lab.stderr
    assert not list(Path(world["TMPDIR"]).iterdir())


def test_another_version_or_none_is_refused_before_anything_runs(world: dict[str, str],
                                                                 tmp_path: Path) -> None:
    fjord = Path(world["PATH"].split(":")[0]) / "fjord"
    fjord.write_text(fjord.read_text().replace(version("fjord"), "0.0.1"))
    out = _fjord(world, "--host", "server", "plan", "-c", str(EXAMPLE))
    assert out.returncode == 1
    assert "is version 0.0.1" in out.stderr and "scripts/bundle" in out.stderr
    assert len(Path(world["FAKE_SSH_LOG"]).read_text().splitlines()) == 1
    fjord.unlink()
    world["PATH"] = "/usr/bin:/bin"
    out = _fjord(world, "--host", "server", "status", "-c", str(EXAMPLE))
    assert out.returncode == 3 and "fjord is not installed on server" in out.stderr
    assert not list(Path(world["TMPDIR"]).iterdir())


def test_an_ssh_failure_is_said(world: dict[str, str], tmp_path: Path) -> None:
    ssh = Path(world["FJORD_SSH"])
    ssh.write_text("#!/bin/sh\necho 'ssh: Could not resolve hostname nowhere' >&2\nexit 255\n")
    out = _fjord(world, "--host", "nowhere", "plan")
    assert out.returncode == 1
    assert "cannot reach nowhere over SSH: ssh: Could not resolve hostname nowhere" in out.stderr
    assert _fjord(world, "--host", "nowhere", "check").returncode == 3


@pytest.mark.parametrize("args", [["plan", "--out", "p.json"], ["apply", "p.json"]])
def test_a_saved_plan_does_not_go_through_host(args: list[str]) -> None:
    from fjord.errors import FjordError

    with pytest.raises(FjordError, match="a saved plan .* cannot go through --host") as exc:
        _invocation(*args, "-c", "x.yaml")
    assert exc.value.exit_code == 2
