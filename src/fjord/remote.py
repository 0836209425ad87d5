"""fjord from another machine: `fjord --host [user@]server[:port] COMMAND ...`.

The local fjord runs the same command with the server's fjord, over the user's own
``ssh`` (their ~/.ssh/config, keys and agent; ``FJORD_SSH`` replaces the ``ssh``
command, as GIT_SSH_COMMAND does for git). Nothing but ssh argv lists on this side; the
remote side gets one command line (ssh joins its arguments into one), every argument
quoted with shlex.quote, run by ``sh -c`` with fixed scripts.

1. A first connection finds fjord on the server (on PATH, else /usr/local/sbin/fjord,
   where the bundle's installer puts it), compares its ``--version`` with this one's
   and, when they are equal and the command takes a configuration file, copies the
   local file into a new private temporary directory (mktemp -d, mode 0700).
2. A second connection runs the command there, with ``-c`` naming that copy, and removes
   the directory when it ends. Output and the exit status pass through; with a terminal
   on both ends, ssh gets one (-t), so apply's question and colours work.
3. ``apply`` always runs with ``--confirm-timeout`` (default CONFIRM_TIMEOUT) and
   ``--announce-confirm``: once the uplink moved and the gateways answer, the server's
   fjord writes CONFIRM_MARKER on a line of its own, and this side opens a NEW ssh
   connection (no multiplexing: ControlPath=none, ControlMaster=no) and runs
   ``fjord confirm`` through it. If that connection fails, nothing is confirmed and the
   server's guard rolls the switchover back at the deadline, as for an operator who
   cannot log in again.

An SSH failure (ssh's own exit status 255) is an error of its own, exit 1 (exit 3 for
status and check, whose 1 means drift or a failed check).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import IO, Any

import click

from fjord.environment import current
from fjord.errors import FjordError

# Commands that act on a server; the others (schema, lab) run on this machine.
COMMANDS = frozenset({"validate", "plan", "apply", "check", "status", "confirm", "container",
                      "image"})
# What the server's fjord writes (stderr, a line of its own) when it waits for `fjord confirm`.
CONFIRM_MARKER = "fjord-remote: waiting for confirmation"
CONFIRM_TIMEOUT = 60.0
# ssh exits 255 when it fails itself (cannot connect, authentication, connection lost).
SSH_FAILED = 255
# How long one confirming connection may take to connect.
CONNECT_TIMEOUT = 10
PREFIX = "fjord-remote: "

EXIT_FAILED, EXIT_INVALID, EXIT_UNREADABLE = 1, 2, 3

INSTALL_HINT = (
    "install the same fjord on the server: `./scripts/bundle` on a machine of the server's "
    "Debian release, copy dist/fjord-*.tar.gz over, then on the server `tar xzf "
    "fjord-*.tar.gz && ./fjord-*/install` (README, \"Installing fjord on your server\")")

# Finds fjord, compares versions, and copies the configuration (stdin) when they match.
# $1: `fjord --version` as this side prints it; $2: the file name to copy stdin to, or "".
PREPARE = r"""
unset FJORD_HOST
want=$1; name=$2
f=$(command -v fjord 2>/dev/null) || f=
if [ -z "$f" ] && [ -x /usr/local/sbin/fjord ]; then f=/usr/local/sbin/fjord; fi
if [ -z "$f" ]; then echo "fjord-remote: missing"; exit 0; fi
v=$("$f" --version 2>/dev/null | head -n 1) || v=
printf 'fjord-remote: fjord=%s\n' "$f"
printf 'fjord-remote: version=%s\n' "$v"
[ "$v" = "$want" ] || exit 0
[ -n "$name" ] || exit 0
d=$(mktemp -d "${TMPDIR:-/tmp}/fjord-remote.XXXXXXXX") || exit 1
if ! cat > "$d/$name"; then rm -rf -- "$d"; exit 1; fi
printf 'fjord-remote: dir=%s\n' "$d"
"""

# Runs the command in the copy's directory ($1, or "" for none) and removes it afterwards,
# also when the connection goes (HUP) or the command is interrupted.
RUN = r"""
unset FJORD_HOST
d=$1; shift
if [ -n "$d" ]; then
  trap 'rm -rf -- "$d"' EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  cd -- "$d" || exit 1
fi
"$@"
"""


@dataclass(frozen=True)
class Host:
    """Where to run: ``[user@]server[:port]``; an IPv6 address with a port in brackets
    (``root@[2001:db8::2]:2222``)."""

    spec: str
    name: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.name}" if self.user else self.name

    def __str__(self) -> str:
        return self.spec


HOSTNAME = re.compile(r"^[A-Za-z0-9_.:%-]+$")
USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


def _error(message: str, *, hint: str | None = None, exit_code: int = EXIT_FAILED) -> FjordError:
    error = FjordError(message, hint=hint)
    error.exit_code = exit_code
    return error


def parse_host(spec: str) -> Host:
    """``[user@]server[:port]``; bad input is a usage error (exit 2), said before any
    connection is tried."""
    def bad(why: str) -> FjordError:
        return _error(f"--host {spec!r}: {why}",
                          hint="write it as [user@]server[:port], e.g. root@203.0.113.7, "
                               "admin@oslo.example.net:2222 or root@[2001:db8::2]:22",
                          exit_code=EXIT_INVALID)

    rest = spec.strip()
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not USER.match(user):
            raise bad(f"{user!r} is not a user name")
    port: str | None = None
    if rest.startswith("["):
        name, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise bad("a bracketed IPv6 address is [ADDRESS] or [ADDRESS]:PORT")
        port = tail[1:] if tail else None
    elif rest.count(":") == 1:
        name, port = rest.split(":")
    else:
        name = rest  # a name, an IPv4 address or a bare IPv6 address (no port)
    if not name or name.startswith("-") or not HOSTNAME.match(name):
        raise bad(f"{name!r} is not a host name or address")
    number = None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise bad(f"{port!r} is not a port (1-65535)")
        number = int(port)
    return Host(spec=spec, name=name, user=user, port=number)


def ssh_command() -> list[str]:
    """The ssh client and options: $FJORD_SSH (split as a shell would), else ``ssh``."""
    words = shlex.split(current().ssh or "ssh")
    if not words:
        raise _error("FJORD_SSH is empty", exit_code=EXIT_INVALID)
    return words


def remote_line(argv: Sequence[str]) -> str:
    """One command line for the server's shell: every word quoted."""
    return " ".join(shlex.quote(a) for a in argv)


def ssh_argv(host: Host, remote: Sequence[str], *, tty: bool = False,
             fresh: bool = False) -> list[str]:
    argv = [*ssh_command(), "-t" if tty else "-T"]
    if host.port:
        argv += ["-p", str(host.port)]
    if fresh:
        # a connection of its own: not through an existing master (ControlMaster),
        # which would prove nothing about reaching the server anew
        argv += ["-o", "ControlPath=none", "-o", "ControlMaster=no",
                 "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    else:
        # a dead path (a switchover gone wrong) ends the session instead of hanging
        argv += ["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=6"]
    return [*argv, "--", host.destination, remote_line(remote)]


def local_version_line() -> str:
    return f"fjord, version {package_version('fjord')}"


@dataclass
class Server:
    fjord: str
    version: str
    dir: str | None = None


def unreachable(host: Host, stderr: str, exit_code: int) -> FjordError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    why = lines[-1] if lines else "ssh failed"
    return _error(f"cannot reach {host} over SSH: {why}",
                  hint="try `ssh " + (f"-p {host.port} " if host.port else "")
                       + shlex.quote(host.destination) + " true`; fjord uses your ssh, "
                       "its ~/.ssh/config and agent ($FJORD_SSH replaces the ssh command)",
                  exit_code=exit_code)


def prepare(host: Host, config: bytes | None, name: str, *, error_code: int) -> Server:
    """Find fjord on the server, check its version, copy the configuration over."""
    want = local_version_line()
    argv = ssh_argv(host, ["sh", "-c", PREPARE, "fjord-remote", want,
                           name if config is not None else ""])
    try:
        proc = subprocess.run(argv, input=config or b"", capture_output=True, timeout=300)
    except FileNotFoundError:
        raise _error(f"cannot run {argv[0]!r}: not found",
                     hint="install the OpenSSH client (apt-get install openssh-client) "
                          "or point $FJORD_SSH at one", exit_code=error_code) from None
    except subprocess.TimeoutExpired:
        raise _error(f"cannot reach {host} over SSH: no answer within 300 s",
                     exit_code=error_code) from None
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode == SSH_FAILED:
        raise unreachable(host, stderr, error_code)
    facts: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith(PREFIX):
            key, _, value = line[len(PREFIX):].partition("=")
            facts[key] = value
    if proc.returncode != 0:
        raise _error(f"preparing {host} failed (exit {proc.returncode}): "
                     f"{stderr.strip() or 'no message'}", exit_code=error_code)
    if "missing" in facts or "fjord" not in facts:
        raise _error(f"fjord is not installed on {host} (not on PATH, not "
                     "/usr/local/sbin/fjord)", hint=INSTALL_HINT, exit_code=error_code)
    server = Server(fjord=facts["fjord"], version=facts.get("version", ""),
                    dir=facts.get("dir"))
    if server.version != want:
        theirs = server.version.rpartition(" ")[2] or "unknown"
        raise _error(
            f"fjord on {host} ({server.fjord}) is version {theirs}, this one is "
            f"{want.rpartition(' ')[2]}: both ends must be the same "
            "version (what apply announces, the exit codes and the file format are only "
            "agreed between equal versions); nothing was run",
            hint=INSTALL_HINT, exit_code=error_code)
    if config is not None and not server.dir:
        raise _error(f"could not copy the configuration file to {host}: "
                     f"{stderr.strip() or 'no temporary directory'}", exit_code=error_code)
    return server


@dataclass
class Invocation:
    """What the local command line asks the server to run."""

    command: str                 # the top-level command (plan, container, ...)
    args: list[str]              # global options for the server's fjord, then the command's
    config: Path | None = None   # the local file to copy over (named by -c or $FJORD_CONFIG)
    confirm_timeout: float | None = None  # apply: the server waits this long for confirm
    error_code: int = EXIT_FAILED


@dataclass
class Outcome:
    exit_code: int
    asked: bool = False                  # the server waited for confirmation
    confirmed: bool = False
    confirm_error: str | None = None


class MarkerFilter:
    """Passes a byte stream through to ``out`` unchanged, except the marker and the rest
    of its line: those go to ``on_marker`` instead. The marker may follow other output on
    the same line (a terminal's progress line, erased with CR and an escape sequence);
    only a tail that may still become the marker is held back, so a prompt without a
    newline shows at once."""

    def __init__(self, out: Callable[[bytes], Any], marker: bytes,
                 on_marker: Callable[[bytes], Any]) -> None:
        self.out, self.marker, self.on_marker = out, marker, on_marker
        self.held = b""

    def feed(self, data: bytes) -> None:
        buf, self.held = self.held + data, b""
        while buf:
            at = buf.find(self.marker)
            if at == -1:
                keep = self._partial(buf)
                if len(buf) > keep:
                    self.out(buf[:len(buf) - keep])
                self.held = buf[len(buf) - keep:]
                return
            if at:
                self.out(buf[:at])
            nl = buf.find(b"\n", at)
            if nl == -1:
                self.held = buf[at:]
                return
            self.on_marker(buf[at:nl + 1])
            buf = buf[nl + 1:]

    def _partial(self, buf: bytes) -> int:
        """The length of the longest tail of ``buf`` that begins the marker."""
        for n in range(min(len(self.marker) - 1, len(buf)), 0, -1):
            if self.marker.startswith(buf[-n:]):
                return n
        return 0

    def close(self) -> None:
        if self.held:
            self.out(self.held)
            self.held = b""


def run(host: Host, inv: Invocation, *, tty: bool | None = None,
        say: Callable[[str], None] | None = None) -> Outcome:
    """Run ``inv`` on ``host``; returns the exit status to pass on and what happened."""
    config_bytes = None
    name = ""
    if inv.config is not None:
        try:
            config_bytes = inv.config.read_bytes()
        except OSError as exc:
            raise _error(f"cannot read {inv.config}: {exc.strerror}",
                         exit_code=EXIT_INVALID) from None
        name = _safe_name(inv.config.name)
    server = prepare(host, config_bytes, name, error_code=inv.error_code)
    args = list(inv.args)
    if inv.config is not None:
        args = [name if a == CONFIG_PLACEHOLDER else a for a in args]
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    eol = "\r\n" if tty else "\n"
    say = say or (lambda text: _write(2, (text.rstrip("\n") + eol).encode()))
    remote = ["sh", "-c", RUN, "fjord-remote", server.dir or "", server.fjord, *args]
    argv = ssh_argv(host, remote, tty=tty)
    outcome = Outcome(exit_code=0)
    confirmer: threading.Thread | None = None

    def on_marker(line: bytes) -> None:
        nonlocal confirmer
        outcome.asked = True
        if confirmer is None:
            seconds = inv.confirm_timeout or CONFIRM_TIMEOUT
            say(f"fjord: the uplink moved; confirming over a new SSH connection to {host} "
                f"(the server rolls back in {seconds:.0f} s without it)")
            confirmer = threading.Thread(
                target=_confirm, args=(host, server.fjord, seconds, outcome, say),
                daemon=True)
            confirmer.start()

    marker = CONFIRM_MARKER.encode()
    if tty:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        stream, sink = proc.stdout, 1
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stream, sink = proc.stderr, 2
    assert stream is not None
    filt = MarkerFilter(lambda b: _write(sink, b), marker, on_marker)
    try:
        _pump(stream, filt)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if confirmer is not None:
        confirmer.join()
    outcome.exit_code = code
    if code == SSH_FAILED:
        what = (f"lost the SSH connection to {host} (or could not open it)" if not
                outcome.asked else f"lost the SSH connection to {host} during the switchover")
        if outcome.asked and not outcome.confirmed:
            what += "; nothing was confirmed: the server's guard rolls the switchover back"
        raise _error(what, hint=f"ssh's own message is above; `fjord --host {host} status` "
                                "shows where the server is", exit_code=inv.error_code)
    return outcome


def _pump(stream: IO[bytes], filt: MarkerFilter) -> None:
    fd = stream.fileno()
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        filt.feed(data)
    filt.close()


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        view = view[n:]


def _confirm(host: Host, fjord: str, seconds: float, outcome: Outcome,
             say: Callable[[str], None]) -> None:
    """`fjord confirm` over new connections, retried until shortly before the deadline."""
    deadline = time.monotonic() + max(seconds - 3, 1)
    argv = ssh_argv(host, [fjord, "confirm"], fresh=True)
    error = "no attempt"
    while time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), 1)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=min(left, CONNECT_TIMEOUT + 20))
        except subprocess.TimeoutExpired:
            error = "timed out"
            continue
        if proc.returncode == 0:
            outcome.confirmed = True
            say(f"fjord: confirmed over a new SSH connection to {host}: the switchover stays")
            return
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        error = err[-1] if err else f"exit {proc.returncode}"
        if proc.returncode != SSH_FAILED:
            break  # the server answered: `fjord confirm` itself refused
        time.sleep(1)
    outcome.confirm_error = error
    say(f"fjord: a new SSH connection to {host} failed ({error}): not confirmed; the "
        "server rolls the switchover back")


def _safe_name(name: str) -> str:
    """The copy's file name on the server: the local one when harmless (messages name
    it), else fjord.yaml."""
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}", name) else "fjord.yaml"


CONFIG_PLACEHOLDER = "\0fjord-remote-config\0"


def _leaf(root: click.Group, root_ctx: click.Context,
          args: list[str]) -> tuple[click.Command, click.Context, str, int]:
    """The command ``args`` name under ``root`` (descending through groups: container
    list), the context to parse it in, its name, and the index of its first argument."""
    cmd: click.Command = root
    ctx, name, i = root_ctx, args[0], 0
    while isinstance(cmd, click.Group) and i < len(args):
        sub = cmd.get_command(ctx, args[i])
        if sub is None:
            break
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=args[i], parent=ctx)
        cmd, name, i = sub, args[i], i + 1
    return cmd, ctx, name, i


CONFIG_FLAGS = ("-c", "--config")


def _without_config(tokens: list[str]) -> list[str]:
    """``tokens`` without their -c/--config options (before any ``--``)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "--":
            out += tokens[i:]
            break
        if t in CONFIG_FLAGS:
            i += 2
            continue
        if t.startswith("--config=") or (t.startswith("-c") and not t.startswith("--")
                                         and len(t) > 2):
            i += 1
            continue
        out.append(t)
        i += 1
    return out


def invocation(root: click.Group, ctx: click.Context, args: list[str],
               global_args: list[str]) -> Invocation:
    """What to run on the server for ``fjord --host H ARGS``: the arguments are parsed
    here first (a usage error or --help is this fjord's, same version as the server's),
    the configuration file is found and the argument naming it replaced by the copy's."""
    command = args[0]
    cmd, parent, name, start = _leaf(root, ctx, args)
    own = args[start:]
    params: dict[str, Any] = {}
    if not isinstance(cmd, click.Group):  # a group's own errors are the server's to say
        params = cmd.make_context(name, list(own), parent=parent).params
    if params.get("out_file") or params.get("plan_file"):
        raise _error("a saved plan (plan --out, apply PLAN) cannot go through --host: the "
                     "file would be on the server", hint="make and apply it on the server "
                     "(ssh SERVER fjord plan --out FILE)", exit_code=EXIT_INVALID)
    inv = Invocation(command=command, args=[])
    if command in ("status", "check"):
        inv.error_code = EXIT_UNREADABLE
    if "config_path" in params:
        local = params["config_path"] or current().config
        if local:
            stripped = _without_config(own)
            own = ["-c", CONFIG_PLACEHOLDER, *stripped]
            check = cmd.make_context(name, list(own), parent=parent,
                                     resilient_parsing=True)
            same = {k: v for k, v in params.items() if k != "config_path"} == {
                k: v for k, v in check.params.items() if k != "config_path"}
            if not same or check.params.get("config_path") != CONFIG_PLACEHOLDER:
                raise _error("cannot tell which argument names the configuration file",
                             hint="write it as `-c FILE` right after the command name",
                             exit_code=EXIT_INVALID)
            inv.config = Path(local)
    if command == "apply" and not isinstance(cmd, click.Group):
        inv.confirm_timeout = params.get("confirm_timeout") or CONFIRM_TIMEOUT
        if params.get("confirm_timeout") is None:
            own = ["--confirm-timeout", f"{CONFIRM_TIMEOUT:g}", *own]
        own = ["--announce-confirm", *own]
    inv.args = [*global_args, *args[:start], *own]
    return inv


def main(root: click.Group, ctx: click.Context, spec: str, args: list[str],
         global_args: list[str]) -> int:
    """`fjord --host SPEC ARGS`: the exit status to leave with."""
    host = parse_host(spec)
    inv = invocation(root, ctx, args, global_args)
    return run(host, inv).exit_code
