"""User text is printed literally: no emoji codes, no markup (issue 15, item 7)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fjord import status, ui
from fjord.engine.change import Change
from fjord.engine.plan import Plan

ADDRESS = "2001:db8:1:100::2/64"          # ":100:" is rich's emoji code for 💯
MARKUP = "admin [bold]laptop[/bold] :smile:"


def _printed(render: Any) -> str:
    out = ui.console()
    with out.capture() as captured:
        render(out)
    return captured.get()


def _change(detail: str, **kwargs: Any) -> Change:
    return Change(resource="container web", action="update", detail=detail,
                  run=lambda ctx: None, **kwargs)


def test_the_console_prints_emoji_codes_as_written():
    text = _printed(lambda out: out.print(f"address {ADDRESS}"))
    assert text == f"address {ADDRESS}\n"
    assert "💯" not in text


def test_plan_lines_print_addresses_and_markup_literally():
    detail = f"eth1 {ADDRESS}; SSH key {MARKUP}"
    plan = Plan(changes=[_change(detail, diff=f"-old\n+{ADDRESS} {MARKUP}\n")],
                warnings=[f"container web: {MARKUP} at {ADDRESS}"])
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    flat = " ".join(text.split())  # lines are wrapped at 80 columns
    assert f"container web: {detail}" in flat
    assert f"+{ADDRESS} {MARKUP}" in text  # diff lines are never wrapped
    assert f"! container web: {MARKUP} at {ADDRESS}" in flat
    assert "💯" not in text and "😄" not in text


def test_apply_progress_lines_print_literally():
    out = ui.console()
    reporter = ui.ProgressReporter(out)
    change = _change(f"{ADDRESS} {MARKUP}")
    with out.capture() as captured:
        reporter.finished(change, 0.5)
        reporter.failed(change, RuntimeError("no"))
    text = " ".join(captured.get().split())
    assert text.count(f"container web: {ADDRESS} {MARKUP}") == 2
    assert f"✗ container web: {ADDRESS} {MARKUP}: failed" in text


def test_the_spinner_shows_the_change_literally():
    # A spinner parses a str as markup with emoji codes, whatever the console says.
    out = Console(file=open("/dev/null", "w"), force_terminal=False)
    reporter = ui.ProgressReporter(out)
    change = _change(f"{ADDRESS} {MARKUP}")
    reporter.started(change)
    try:
        assert str(reporter._status.renderable.text) == f"container web: {ADDRESS} {MARKUP}"
    finally:
        reporter._stop()
    reporter.started_group([change, _change("x")])
    try:
        assert "💯" not in str(reporter._status.renderable.text)
    finally:
        reporter._stop()
        out.file.close()


def test_a_list_row_prints_the_address_literally():
    # `fjord container list` prints a rich Table through ui.console().
    table = Table(box=None)
    for col in ("name", "ipv6"):
        table.add_column(col)
    table.add_row(escape("web [bold]x[/bold]"), ADDRESS)
    text = _printed(lambda out: out.print(table))
    assert ADDRESS in text and "web [bold]x[/bold]" in text


def test_status_prints_addresses_literally():
    report = {
        "host": {"fqdn": "oslo.example.net", "converged": False, "ipv4": "192.0.2.5/27",
                 "ipv6": ADDRESS, "private": "10.1.0.1/16"},
        "in_order": [{"resource": "file /etc/hosts", "state": MARKUP}],
        "drift": [{"resource": "container web", "action": "update",
                   "detail": f"{ADDRESS} {MARKUP}"}],
        "unreadable": [],
        "containers": [{"name": "web", "state": "running", "fqdn": "web.example.net",
                        "ipv4": "10.1.0.2", "ipv6": "2001:db8:1:100::3", "in_file": True}],
    }
    text = _printed(lambda out: status.render(report, out))
    assert f"public  192.0.2.5/27  {ADDRESS}" in text
    assert f"to update: {ADDRESS} {MARKUP}" in text
    assert "2001:db8:1:100::3" in text and "💯" not in text
