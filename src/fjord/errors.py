"""Errors that reach the operator: a message, and where useful a hint of what to do next."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def format_argv(argv: Sequence[str]) -> str:
    """A command line as a shell would read it back (for messages and logs only)."""
    return shlex.join(str(a) for a in argv)


class FjordError(Exception):
    """An error fjord reports without a traceback (unless --debug)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CommandError(FjordError):
    """An external program failed; carries the command line and its stderr."""

    def __init__(
        self, argv: list[str], returncode: int | None, stderr: str, *, hint: str | None = None
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        what = "timed out" if returncode is None else f"exited with status {returncode}"
        detail = stderr.strip()
        message = f"command {what}: {format_argv(argv)}"
        if detail:
            message += "\n" + "\n".join("  " + line for line in detail.splitlines()[-20:])
        super().__init__(message, hint=hint)


class NotRootError(FjordError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs root", hint="run it with sudo, or as root on the server"
        )
