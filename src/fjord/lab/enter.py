"""Run a command on a lab's server, router or far host: `python -m fjord.lab.enter
LAB server|upstream|far -- CMD...` (what `fjord lab exec` and `fjord lab upstream` do
in-process).

The process first joins the lab's cgroup (so that `lab down` and `lab reboot` find
everything it starts, daemons included), then replaces itself with `nsenter` into the
namespaces and finally with CMD: stdin, stdout, stderr, signals, the terminal and the
exit status are CMD's own. The environment passes through (on the server with
SERVER_ENV's defaults added); the working directory too when the server can see it
(else /).

Kept to the standard library and fjord.lab.names: it runs for every `lab exec`.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from fjord.errors import FjordError
from fjord.lab.names import Names, netns_path
from fjord.lab.procs import Proc, read_json

PARTS = {"server": "server", "upstream": "upstream", "far": "upstream"}  # -> cgroup part
EXIT_NOT_RUNNING = 125
# The environment a simulated server gives fjord (unless the caller sets otherwise): the
# lab's service manager instead of systemd, packages simulated (the lab shares /usr with
# the machine), and the image cache all labs share.
SERVER_ENV = {
    "FJORD_SERVICE_MANAGER": "lab",
    "FJORD_PACKAGE_MANAGER": "simulate",
    "FJORD_IMAGES_DIR": "/var/cache/fjord/images",
}


def enter_argv(lab: str, part: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in a lab's ``part`` (server, upstream, far)
    through this helper (for fjord.runner.run or subprocess.Popen)."""
    return [sys.executable, "-m", "fjord.lab.enter", lab, part, "--", *argv]


def holder(names: Names) -> Proc:
    proc = Proc.from_json((read_json(names.dir / "holder.json") or {}).get("holder"))
    if proc is None or not proc.alive():
        raise FjordError(f"lab {names.lab} is not running",
                         hint=f"start it with `fjord lab up --name {names.lab}`")
    return proc


def nsenter_argv(names: Names, part: str, argv: list[str], cwd: str | None = None) -> list[str]:
    if part not in PARTS:
        raise FjordError(f"unknown lab part {part!r} (server, upstream or far)")
    if not argv:
        raise FjordError("no command given", hint="put the command after --")
    if part == "server":
        pid = holder(names).pid
        cwd = cwd if cwd is not None else _cwd()
        if cwd is None or not os.path.isdir(f"/proc/{pid}/root{cwd}"):
            cwd = "/"
        return ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", "--cgroup",
                f"--wd={cwd}", "--", *argv]
    netns = names.netns_upstream if part == "upstream" else names.netns_far
    path = netns_path(netns)
    if not path.exists():
        raise FjordError(f"lab {names.lab} is not running",
                         hint=f"start it with `fjord lab up --name {names.lab}`")
    return ["nsenter", f"--net={path}", "--", *argv]


def join_cgroup(names: Names, part: str) -> None:
    from fjord.lab.cgroups import ROOT, hierarchies

    for h in hierarchies():
        path = ROOT / h / names.cgroup / PARTS[part] / "cgroup.procs"
        path.write_text(str(os.getpid()))


def enter(lab: str, part: str, argv: list[str]) -> NoReturn:
    """Become ``argv`` running in the lab (never returns; raises FjordError first if the
    lab is not running)."""
    names = Names(lab)
    argv = running_fjord(argv, os.environ)
    command = nsenter_argv(names, part, argv)
    join_cgroup(names, part)
    if part == "server":
        for key, value in SERVER_ENV.items():
            os.environ.setdefault(key, value)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)


def running_fjord(argv: list[str], env: dict[str, str] | os._Environ[str]) -> list[str]:
    """``fjord`` as a command is the fjord that is running (the one beside this
    interpreter, a venv's say), found without PATH; the interpreter's directory is added
    at the end of PATH (``env``, changed in place) so that a shell in the lab finds it
    too when nothing else named fjord is installed."""
    bindir = os.path.dirname(sys.executable)
    if not bindir:
        return argv
    path = env.get("PATH", os.defpath)
    if bindir not in path.split(os.pathsep):
        env["PATH"] = f"{path}{os.pathsep}{bindir}" if path else bindir
    mine = os.path.join(bindir, "fjord")
    if argv and argv[0] == "fjord" and os.access(mine, os.X_OK):
        return [mine, *argv[1:]]
    return argv


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def main(args: list[str]) -> int:
    if len(args) < 3 or args[2] != "--":
        print("usage: python -m fjord.lab.enter LAB server|upstream|far -- CMD...",
              file=sys.stderr)
        return 2
    try:
        enter(args[0], args[1], args[3:])
    except FjordError as exc:
        print(f"fjord lab: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
              file=sys.stderr)
    except OSError as exc:
        print(f"fjord lab: cannot enter lab {args[0]}: {exc}", file=sys.stderr)
    return EXIT_NOT_RUNNING


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
