"""Readable output (issue 16 item 4): plan and apply lines fit 80 columns with hanging
indents and do not repeat themselves; `plan -v` shows real diffs (files, the nftables
table, the libvirt domain) in a block of their own; `apply --json` says how each change
ended and how long it took."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

import fjord.cli
import fjord.config.desired
from fjord import ui
from fjord.containers.domain import canonical_xml
from fjord.containers.libvirt import DomainState
from fjord.containers.resources import DomainResource
from fjord.engine.apply import Journal, apply
from fjord.engine.change import Change, Unchanged
from fjord.engine.plan import Plan, make_plan
from fjord.engine.resource import Context, Options, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.net import nft
from fjord.net.firewall import Firewall, ResolvedForward, Ruleset

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "2001:db8:1:100::2/64"          # ":100:" is rich's emoji code for 💯
MARKUP = "[bold]laptop[/bold] :smile:"
LINE = re.compile(r" {2}(\d+| \d|  \d)\. [+~\-✗] ")


def _noop(ctx: Context) -> None:
    pass


# Details as the resources write them (long ones included), each naming its resource.
CHANGES = [
    Change("file /etc/sysctl.d/60-fjord.conf", "create",
           "write /etc/sysctl.d/60-fjord.conf (sysctl settings fjord needs, applied at "
           "boot)", _noop),
    Change("apt-update lists", "update", "run apt-get update (fjord has not run it yet)",
           _noop),
    Change("packages host", "create",
           "install openvswitch-switch (for host.switch), libvirt-daemon-driver-lxc (for "
           "host.libvirt), nftables, emacs-nox, dbus", _noop),
    Change("nftables inet fjord", "update",
           "reload nftables table inet fjord (NAT for 10.1.0.0/16 out of br-ex, 1 port "
           "forward, IPv6 for 1 container): the declared ruleset changed", _noop),
    Change("domain test", "create",
           "define test: 512 MiB, 1 vCPU, eth0 on br-int (Open vSwitch) "
           "52:54:00:95:fc:70, started at boot", _noop),
    Change("route 2001:db8:151:7307:1::1/128 dev br-int", "delete",
           "route 2001:db8:151:7307:1::1/128 via br-int: no container has it any more",
           _noop),
]


def _printed(render: Any, width: int = 80) -> str:
    out = ui.console()
    out.width = width
    with out.capture() as captured:
        render(out)
    return captured.get()


def _blocks(text: str) -> list[list[str]]:
    """The numbered lines, each with its continuation lines."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if LINE.match(line):
            blocks.append([line])
        elif blocks and line.startswith(" " * 7):
            blocks[-1].append(line)
        elif blocks and blocks[-1]:
            blocks.append([])  # something else ends the block
    return [b for b in blocks if b]


def test_plan_lines_fit_80_columns_with_hanging_indents_and_say_things_once():
    text = _printed(lambda out: ui.render_plan(Plan(changes=list(CHANGES)), out))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    blocks = _blocks(text)
    assert len(blocks) == len(CHANGES)
    assert any(len(b) > 1 for b in blocks), "nothing was long enough to wrap"
    for block, change in zip(blocks, CHANGES, strict=True):
        for cont in block[1:]:
            # under the text (column 7), not under the number or the symbol
            assert cont.startswith(" " * 7) and cont[7] != " ", block
        said = " ".join(" ".join(block).split())
        # the whole detail is there, and the resource's name only once
        assert " ".join(change.detail.split()) in said
        name = change.resource.split(" ", 1)[1]
        assert said.count(change.resource) <= 1, said
        assert len(re.findall(rf"(?<![\w.]){re.escape(name)}(?![\w.])", said)) <= 1, said
        assert f"{change.action} {change.resource}" not in said
    # "apt-get update (never run by fjord)" read as if fjord never ran apt-get
    assert "apt-update lists: run apt-get update (fjord has not run it yet)" in text


def test_a_file_change_is_not_said_twice(tmp_path: Path, state_dir: Path):
    path = tmp_path / "hosts"
    (change,) = File(path, "127.0.0.1 localhost\n").changes(Context(desired=None))  # type: ignore[arg-type]
    text = _printed(lambda out: ui.render_plan(Plan(changes=[change]), out))
    assert text.count(str(path)) == 1, text
    assert " ".join(text.split()).startswith(f"1. + write {path}"), text


def test_apply_progress_lines_wrap_with_the_duration_whole():
    out = ui.console()
    out.width = 80
    reporter = ui.ProgressReporter(out)
    with out.capture() as captured:
        for change in CHANGES:
            reporter.finished(change, 0.52)
        reporter.failed(CHANGES[0], RuntimeError("no"))
    lines = captured.get().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert sum("(0.52 s)" in line for line in lines) == len(CHANGES)  # never split
    assert any(line.startswith("  7. ✗ write /etc/sysctl.d") for line in lines), lines


def test_user_text_in_wrapped_lines_is_printed_literally():
    change = Change("container web", "update", f"eth1 {ADDRESS}; SSH key {MARKUP} " * 3,
                    _noop, diff=f"+{ADDRESS} {MARKUP}\n")
    plan = Plan(changes=[change], warnings=[f"{MARKUP} at {ADDRESS}"])
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    flat = " ".join(text.split())
    assert f"container web: eth1 {ADDRESS}; SSH key {MARKUP}" in flat
    assert f"! {MARKUP} at {ADDRESS}" in flat and f"+{ADDRESS} {MARKUP}" in text
    assert "💯" not in text and "😄" not in text


# --- plan -v: the nftables table --------------------------------------------------------


class FakeNft:
    """The kernel's table as `nft -s list table` lists it; what fjord asked for."""

    def __init__(self) -> None:
        self.table: str | None = None
        self.listed_declared = 0

    @staticmethod
    def listing(text: str) -> str:
        return text[text.index("table inet fjord {"):]

    def list_table(self, fam: str, name: str) -> str | None:
        return self.table

    def declared_listing(self, text: str, fam: str, name: str) -> str:
        self.listed_declared += 1
        return self.listing(text)

    def ruleset(self) -> dict[str, object]:
        return {"nftables": []}

    def load(self, text: str) -> None:
        nft.ensure_fjords(text)
        self.table = self.listing(text)


def _lab() -> Any:
    return fjord.config.desired.load(str(ROOT / "examples" / "lab.yaml"))


def test_plan_v_shows_the_nft_table_diff_and_a_plain_plan_does_not_compute_it(state_dir):
    desired, fake = _lab(), FakeNft()
    ctx = Context(desired, drivers={"nft": fake})
    rs = Ruleset.from_desired(desired)
    for change in Firewall(rs).changes(ctx):
        change.run(ctx)
    more = replace(rs, forwards=(*rs.forwards, ResolvedForward(
        "udp", 5353, "test", IPv4Address("10.1.0.2"), 53)))
    plan = make_plan([Firewall(more)], ctx)
    (change,) = plan.changes
    assert change.detail.endswith("the declared ruleset changed")
    plain = _printed(lambda out: ui.render_plan(plan, out))
    assert fake.listed_declared == 0 and "Diffs" not in plain  # read only for -v
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    assert fake.listed_declared == 1
    head, _, diffs = text.partition("Diffs (- as it is, + as declared):")
    assert "dport 5353" not in head  # the list of changes stays short
    changed = [line for line in diffs.splitlines()
               if line[:1] in ("+", "-") and not line.startswith(("+++", "---"))]
    assert changed and all(line.startswith("+") and "5353" in line for line in changed), diffs
    assert "1. nftables inet fjord" in diffs
    assert "table inet fjord (nft list table)" in diffs


def test_plan_v_diff_of_a_table_someone_changed(state_dir):
    desired, fake = _lab(), FakeNft()
    ctx = Context(desired, drivers={"nft": fake})
    resource = Firewall(Ruleset.from_desired(desired))
    resource.changes(ctx)[0].run(ctx)
    assert fake.table is not None
    fake.table += "# someone was here\n"
    (change,) = resource.changes(ctx)
    assert change.detail.endswith("changed outside fjord since it was loaded")
    assert "-# someone was here" in (change.diff_text() or "")


# --- plan -v: the libvirt domain --------------------------------------------------------


class Domains:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def domain(self, name: str) -> DomainState:
        return DomainState(name, "0b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", False, True,
                           self.xml)


def test_plan_v_shows_the_domain_xml_diff(state_dir):
    desired = _lab()
    container = desired.container("test")
    ctx = Context(desired)
    wanted = DomainResource(container)._wanted(ctx, "0b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
    # libvirt's XMLDesc: 256 MiB, attributes in another order, an element of its own,
    # single quotes and its own indentation
    live = wanted.xml().replace(f">{container.memory >> 10}</memory>", ">262144</memory>")
    live = live.replace("<devices>", "<devices>\n    <emulator>/usr/lib/libvirt/"
                        "libvirt_lxc</emulator>").replace('"', "'").replace("  ", "\t")
    ctx.drivers["libvirt"] = Domains(live)
    plan = make_plan([DomainResource(container)], ctx)
    (change,) = plan.changes
    assert change.detail.startswith("redefine test: memory: 256 MiB -> 512 MiB")
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    _, _, diffs = text.partition("Diffs (- as it is, + as declared):")
    changed = [line[0] + line[1:].strip() for line in diffs.splitlines()
               if line[:1] in ("+", "-") and not line.startswith(("+++", "---"))]
    assert sorted(changed) == sorted([
        '-<memory unit="KiB">262144</memory>', '+<memory unit="KiB">524288</memory>',
        "-<emulator>/usr/lib/libvirt/libvirt_lxc</emulator>"]), diffs
    assert "domain test (libvirt XMLDesc)" in diffs and "domain test (declared)" in diffs


def test_canonical_xml_ignores_attribute_order_quotes_and_indentation():
    a = "<domain type='lxc' id='3'>\n\t<name>web</name>\n  <on_crash a='1' b='2'/></domain>"
    b = '<domain id="3" type="lxc"><name>web</name><on_crash b="2" a="1" /></domain>'
    assert canonical_xml(a) == canonical_xml(b)
    assert canonical_xml(a).splitlines()[1] == "  <name>web</name>"


# --- plan -v: the commands under their change ------------------------------------------


class Reads(Resource):
    kind = "reads"

    def changes(self, ctx: Context) -> list[Change]:
        from fjord import runner

        runner.run(["true", self.name])
        return [Change(self.id, "update", f"fix {self.name}", _noop,
                       diff="--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n")]


def test_plan_v_lists_commands_under_their_change_and_diffs_apart():
    ctx = Context(desired=None, options=Options(commands=True))  # type: ignore[arg-type]
    plan = make_plan([Reads("one"), Reads("two")], ctx)
    assert plan.commands == {"reads one": ["true one"], "reads two": ["true two"]}
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    head, marker, diffs = text.partition("Diffs (- as it is, + as declared):")
    assert marker and "$ true one" in head and "$ true" not in diffs
    assert head.index("fix one") < head.index("$ true one") < head.index("fix two")
    assert "-old" not in head and diffs.count("+new") == 2
    plain = make_plan([Reads("one")], Context(desired=None))  # type: ignore[arg-type]
    assert plain.commands == {}


# --- apply --json ------------------------------------------------------------------------


class Steps(Resource):
    """A resource with several changes, each setting one key of ``world``; one may fail."""

    kind = "steps"

    def __init__(self, name: str, world: dict[str, Any], keys: list[str],
                 fail: str | None = None, after: tuple[Resource, ...] = (),
                 settles: str | None = None) -> None:
        super().__init__(name)
        self.world, self.keys, self.fail, self.after = world, keys, fail, after
        self.settles = settles

    def changes(self, ctx: Context) -> list[Change]:
        return [Change(self.id, "update", f"set {k}", self._setter(k))
                for k in self.keys if not self.world.get(k)]

    def _setter(self, key: str) -> Any:
        def run(ctx: Context) -> None:
            if key == self.fail:
                raise FjordError(f"{key}: boom")
            self.world[key] = True
            if self.settles:  # done on the side: what a later resource wanted
                self.world[self.settles] = True
        return run


def _steps(world: dict[str, Any]) -> list[Resource]:
    a = Steps("a", world, ["a1"], settles="b1")
    b = Steps("b", world, ["b1"], after=(a,))                   # settled by a's change
    c = Steps("c", world, ["c1", "c2", "c3"], fail="c2", after=(b,))
    d = Steps("d", world, ["d1"], after=(c,))                   # not reached
    return [a, b, c, d]


def _outcomes(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["detail"], r["outcome"]) for r in rows]


def test_apply_journal_says_done_settled_failed_skipped_with_durations():
    world: dict[str, Any] = {}
    resources = _steps(world)
    ctx = Context(desired=None)  # type: ignore[arg-type]
    plan = make_plan(resources, ctx)
    assert len(plan.changes) == 6
    journal = Journal()
    with pytest.raises(FjordError, match="c2: boom"):
        apply(resources, ctx, ui.ProgressReporter(ui.console(stderr=True)), journal)
    rows = journal.outcomes(plan.by_resource)
    assert _outcomes(rows) == [("set a1", "done"), ("set b1", "settled"),
                               ("set c1", "done"), ("set c2", "failed"),
                               ("set c3", "skipped"), ("set d1", "skipped")]
    for row in rows:
        assert set(row) == {"resource", "action", "detail", "outcome", "duration_s"}
        if row["outcome"] in ("done", "failed"):
            assert isinstance(row["duration_s"], float) and row["duration_s"] >= 0
        else:
            assert row["duration_s"] is None


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fjord", *args])
    try:
        fjord.cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("FJORD_STATE_DIR", str(tmp_path))


def _fake_host(monkeypatch: pytest.MonkeyPatch, world: dict[str, Any]) -> None:
    def plan(desired: Any, options: Options) -> Any:
        ctx = Context(desired, options=options)
        resources = _steps(world)
        return ctx, resources, make_plan(resources, ctx)

    monkeypatch.setattr(fjord.cli, "_plan", plan)


def test_apply_json_carries_outcomes_even_when_a_change_fails(monkeypatch, capsys, as_root):
    world: dict[str, Any] = {}
    _fake_host(monkeypatch, world)
    config = str(ROOT / "examples" / "lab.yaml")
    code, out, err = _main(monkeypatch, capsys, "apply", "-c", config, "--yes", "--json")
    assert code == 1 and "c2: boom" in err
    result = json.loads(out)
    assert result["failed"] is True and result["applied"] == 2 and "c2: boom" in result["error"]
    assert _outcomes(result["changes"]) == [
        ("set a1", "done"), ("set b1", "settled"), ("set c1", "done"), ("set c2", "failed"),
        ("set c3", "skipped"), ("set d1", "skipped")]
    # the next apply continues from where the host is
    world_fixed = world
    code, out, _ = _main(monkeypatch, capsys, "apply", "-c", config, "--yes", "--json")
    assert code == 1  # c2 still fails
    assert _outcomes(json.loads(out)["changes"])[0] == ("set c2", "failed")
    world_fixed["c2"] = True
    code, out, _ = _main(monkeypatch, capsys, "apply", "-c", config, "--yes", "--json")
    result = json.loads(out)
    assert code == 0 and result["failed"] is False and "error" not in result
    assert _outcomes(result["changes"]) == [("set c3", "done"), ("set d1", "done")]


def test_plan_v_unchanged_lines_do_not_repeat_the_resource_either():
    plan = Plan(unchanged=[Unchanged("file /etc/hosts", "/etc/hosts has the declared content"),
                           Unchanged("cgroups layout", "unified")])
    text = _printed(lambda out: ui.render_plan(plan, out, verbose=True))
    assert "  = /etc/hosts has the declared content\n" in text
    assert "  = cgroups layout: unified\n" in text
