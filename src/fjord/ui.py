"""Rendering plans, progress and errors for people (rich) and for programs (JSON)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from fjord.engine.change import Change
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


def change_line(i: int, change: Change) -> str:
    sym, colour = SYMBOL[change.action]
    return (f"[{colour}]{i:>3}. {sym} {change.action:<6}[/] [bold]{escape(change.resource)}[/]"
            f"  {escape(change.detail)}")


def render_plan(plan: Plan, out: Console, *, verbose: bool = False) -> None:
    for u in plan.unreadable:
        out.print(f"[yellow]  ! cannot read {escape(u.resource)}: {escape(u.reason)}[/]")
    for w in plan.warnings:
        out.print(f"[yellow]  ! {escape(w)}[/]")
    if verbose:
        for same in plan.unchanged:
            out.print(f"[dim]    = {escape(same.resource)}: {escape(same.reason)}[/]")
    if plan.empty:
        out.print("No changes: the host is as declared.")
        return
    for i, change in enumerate(plan.changes, 1):
        out.print(change_line(i, change))
        if verbose and change.diff:
            for line in change.diff.rstrip("\n").splitlines():
                colour = {"+": "green", "-": "red"}.get(line[:1], "dim")
                out.print(f"[{colour}]        {escape(line)}[/]")
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
        self._status = self.out.status(Text(f"{change.resource}: {change.detail}"),
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
        self.out.print(f"{change_line(self.count, change)} [dim]({seconds:.2f} s)[/]")

    def failed(self, change: Change, error: BaseException) -> None:
        self._done(change)
        self._stop()  # the apply ends here
        self.out.print(f"[red]{self.count:>3}. ✗ {escape(change.resource)}: "
                       f"{escape(change.detail)}[/]")
