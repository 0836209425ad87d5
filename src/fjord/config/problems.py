"""A configuration problem: a key path, a message and, when known, where it stands in the file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fjord.errors import FjordError

Path = tuple[str | int, ...]


def printable(text: str) -> str:
    """``text`` with control and other invisible characters escaped (\\x1b, \\n, \\u200b).

    Keys and values come from the file; printed raw, they could move the cursor, clear
    the terminal or split one problem over several lines.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


# A key longer than this is shown cut (a container named with 10,000 characters would
# otherwise make a 10,000-character problem line).
LONGEST_KEY = 100


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            if len(part) > LONGEST_KEY:
                part = f"{part[:LONGEST_KEY - 20]}…({len(part)} characters)"
            out += ("." if out else "") + (part or '""')
    return printable(out) or "(top level)"


@dataclass(frozen=True, order=True)
class Problem:
    path: Path
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, filename: str | None = None) -> str:
        """One line: ``key.path: message (file, line L, column C)``."""
        text = f"{format_path(self.path)}: {printable(self.message)}"
        where = [printable(filename)] if filename else []
        if self.line is not None:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column else ""))
        return f"{text} ({', '.join(where)})" if where else text


class ConfigError(FjordError):
    """One or more problems with a configuration file: exit status 2."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem], filename: str | None = None) -> None:
        # by position, then path (as text: a path may mix list indices and keys)
        self.problems = sorted(set(problems), key=lambda p: (
            p.line or 0, p.column or 0, format_path(p.path), p.message))
        self.filename = filename
        super().__init__("\n".join(p.render(filename) for p in self.problems))
