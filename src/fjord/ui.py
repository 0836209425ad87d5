"""Rendering plans, progress and errors for people (rich) and for programs (JSON)."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

from rich.console import Console
from rich.text import Text

from fjord.engine.change import Change, about
from fjord.engine.plan import Plan

SYMBOL = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def console(stderr: bool = False) -> Console:
    """The console every command prints through. User text reaches it as it was written:
    no emoji codes (rich would print ``2001:db8:1:100::2`` as ``2001:db8:1💯:2``), no
    highlighting; markup is fjord's own, and every user string in it goes through
    ``escape`` (or is a ``Text``, which is never parsed)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


GLUE = "\x00"  # joins the words of a tail for textwrap (never in a change)


def wrap(text: str, width: int, first: str, rest: str | None = None) -> list[str]:
    """``text`` after ``first`` in lines of at most ``width`` columns, the continuation
    lines indented under the text (not under ``first``): a hanging indent. Names such
    as ``br-int`` or paths are not split at their hyphens or slashes unless one alone
    is wider than the line."""
    rest = " " * len(first) if rest is None else rest
    room = max(width - len(first), 20)
    lines = textwrap.wrap(text, room, break_on_hyphens=False) or [""]
    return [first + lines[0], *(rest + line for line in lines[1:])]


def hanging(first: str, text: str, width: int, style: str = "", *,
            first_style: str | None = None, tail: str = "", tail_style: str = "dim") -> Text:
    """A ``Text`` (never parsed for markup or emoji codes) of ``text`` wrapped under
    ``first``; ``tail`` (a duration, say) ends the last line, in ``tail_style``."""
    # the tail is one word for textwrap, so that it never splits
    joined = f"{text} {tail.replace(' ', GLUE)}" if tail else text
    out = Text("\n".join(wrap(joined, width, first)).replace(GLUE, " "), style=style)
    if first_style is not None:
        out.stylize(first_style, 0, len(first))
    if tail:
        out.stylize(tail_style, len(out.plain) - len(tail))
    return out


def change_prefix(i: int, change: Change) -> str:
    sym, _ = SYMBOL[change.action]
    return f"{i:>3}. {sym} "


def change_line(i: int, change: Change, width: int = 80, tail: str = "") -> Text:
    """One change, numbered, its symbol coloured by its action (+ create, ~ update,
    - delete), then its headline wrapped under itself."""
    _, colour = SYMBOL[change.action]
    return hanging(change_prefix(i, change), change.headline, width,
                   first_style=f"bold {colour}", tail=tail)


def notice(text: str, width: int, mark: str = "!", style: str = "yellow") -> Text:
    return hanging(f"  {mark} ", text, width, style)


def render_diffs(changes: list[tuple[int, Change]], out: Console) -> None:
    """The diffs of ``plan -v``, in a block of their own after the list of changes:
    each under a rule naming its change; the diff lines as they are (not wrapped)."""
    shown = [(i, c, d) for i, c in changes if (d := c.diff_text())]
    if not shown:
        return
    out.print()
    out.print(Text("Diffs (- as it is, + as declared):", style="bold"))
    for i, change, diff in shown:
        out.rule(Text(f"{i}. {change.resource}"), align="left", style="dim")
        for line in diff.rstrip("\n").splitlines():
            colour = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
            if line.startswith(("+++", "---")):
                colour = "bold"
            out.print(Text(line, style=colour), soft_wrap=True)
    out.print()


def _commands(plan: Plan, resource: str, out: Console, listed: set[str]) -> None:
    """The commands reading ``resource`` ran (plan -v), once, under its first line."""
    if resource in listed:
        return
    listed.add(resource)
    for command in plan.commands.get(resource, ()):
        out.print(hanging("       $ ", command, out.width, "dim"))


def render_plan(plan: Plan, out: Console, *, verbose: bool = False) -> None:
    width = out.width
    for u in plan.unreadable:
        out.print(notice(f"cannot read {u.resource}: {u.reason}", width))
    for w in plan.warnings:
        out.print(notice(w, width))
    listed: set[str] = set()
    if verbose:
        for same in plan.unchanged:
            out.print(notice(about(same.resource, same.reason), width, "=", "dim"))
            _commands(plan, same.resource, out, listed)
    if plan.empty:
        out.print("No changes: the host is as declared.")
        return
    numbered = list(enumerate(plan.changes, 1))
    for i, change in numbered:
        out.print(change_line(i, change, width))
        if verbose:
            _commands(plan, change.resource, out, listed)
    if verbose:
        render_diffs(numbered, out)
    counts = {a: sum(1 for c in plan.changes if c.action == a) for a in SYMBOL}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n)
    out.print(f"Plan: {len(plan.changes)} change{'s' if len(plan.changes) != 1 else ''} "
              f"({summary}).")
    if plan.unreadable:
        out.print(f"[yellow]{len(plan.unreadable)} resource(s) could not be read; "
                  "what they would change is not in this plan.[/]")


class ProgressReporter:
    """One line per change as it finishes, with its duration; a spinner while changes
    run (one for a group of changes that run at the same time)."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.count = 0
        self._status: Any = None
        self._running: set[int] = set()

    def started(self, change: Change) -> None:
        self._stop()
        self._running = {id(change)}
        # A spinner parses a str as markup with emoji codes whatever the console says:
        # give it Text, which is shown as it is.
        self._status = self.out.status(Text(change.headline),
                                       spinner="dots")
        self._status.start()

    def started_group(self, changes: list[Change]) -> None:
        self._stop()
        self._running = {id(c) for c in changes}
        names = ", ".join(c.resource for c in changes[:4])
        more = f" and {len(changes) - 4} more" if len(changes) > 4 else ""
        self._status = self.out.status(Text(f"{len(changes)} at once: {names}{more}"),
                                       spinner="dots")
        self._status.start()

    def progress(self, what: str, fraction: float, stage: str) -> None:
        """How far a long change is (an image build: its stage and share done), on the
        line of the spinner."""
        if self._status is not None:
            self._status.update(Text(f"{what}: {stage} ({fraction:.0%})"))

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _done(self, change: Change) -> None:
        self.count += 1
        self._running.discard(id(change))
        if not self._running:
            self._stop()

    def finished(self, change: Change, seconds: float) -> None:
        self._done(change)
        self.out.print(change_line(self.count, change, self.out.width,
                                   tail=f"({seconds:.2f} s)"))

    def failed(self, change: Change, error: BaseException) -> None:
        self._done(change)
        self._stop()  # the apply ends here
        self.out.print(hanging(f"{self.count:>3}. ✗ ", f"{change.headline}: failed",
                               self.out.width, "red"))
