"""The one way fjord runs external programs.

Argument lists only (never a shell), stdin from /dev/null unless input is given,
a timeout on everything, every command logged (shown with --verbose), and failures
that carry the command line and its stderr.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fjord.errors import CommandError, FjordError, format_argv

__all__ = ["DEFAULT_TIMEOUT", "Result", "format_argv", "prepare", "run"]

log = logging.getLogger("fjord.run")

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a program fjord runs: fjord's own (children inherit it: PATH,
    the locale, the FJORD_* variables the process was told), then ``env``. The one
    place below the command line that reads ``os.environ``, to pass it on."""
    full_env = dict(os.environ)
    full_env.setdefault("LC_ALL", "C.UTF-8")
    if env:
        full_env.update(env)
    return full_env


def prepare(argv: Sequence[str],
            env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The argument list as strings and the environment a command runs with (logged)."""
    args = [os.fspath(a) for a in argv]
    full_env = child_env(env)
    log.debug("run: %s", format_argv(args))
    return args, full_env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    hint: str | None = None,
) -> Result:
    """Run ``argv``; raise CommandError when it fails and ``check`` is set."""
    args, full_env = prepare(argv, env)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise FjordError(
            f"program not found: {args[0]}",
            hint=hint or "install it (make setup installs everything fjord needs)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(args, None, stderr or f"no answer after {timeout} s", hint=hint) from exc
    seconds = time.monotonic() - start
    log.debug("  -> %d in %.3f s", proc.returncode, seconds)
    result = Result(args, proc.returncode, proc.stdout, proc.stderr, seconds)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr or proc.stdout, hint=hint)
    return result
