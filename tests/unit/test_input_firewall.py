"""The host input firewall (host.firewall): its table, its validation, the guard that
keeps the owner's SSH in, and its removal.

The rendered table is a golden file (tests/unit/golden/firewall/input.nft; the `nft -c`
check of every golden file there, in tests/unit/test_firewall.py, covers it too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from goldens import check_golden
from test_config_validate import cfg, problems
from told import tell

from fjord.config.desired import Desired, load
from fjord.config.loader import parse
from fjord.config.problems import ConfigError
from fjord.config.validate import check
from fjord.engine.plan import StateUnreadable, make_plan
from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.net import firewall, input_firewall, nft
from fjord.net.input_firewall import (
    InputFirewall,
    InputRuleset,
    Listener,
    locked_out,
    parse_listeners,
)
from fjord.resources import network_resources, registry

GOLDEN = Path(__file__).parent / "golden" / "firewall"
CONFIG = GOLDEN / "input.yaml"
WITHOUT = GOLDEN / "no-containers.yaml"  # the same host without host.firewall


def desired(path: Path = CONFIG) -> Desired:
    return load(str(path))


# --- rendering -------------------------------------------------------------------------------


def test_table_matches_golden_file() -> None:
    rs = InputRuleset.from_desired(desired())
    assert rs is not None
    check_golden(GOLDEN, "input.nft", rs.render())


def test_only_its_own_table_is_replaced() -> None:
    rs = InputRuleset.from_desired(desired())
    assert rs is not None
    assert nft.ensure_fjords(rs.render()) == [("inet", "fjord-input")] * 3


def test_ssh_is_open_once_and_the_rest_is_dropped_last() -> None:
    rs = InputRuleset.from_desired(desired())
    assert rs == InputRuleset(2200, (80, 443), (51820,))
    lines = [line.strip() for line in rs.render().splitlines()]
    body = lines[lines.index("chain input {") + 1:lines.index("}")]
    assert body[0] == "type filter hook input priority filter; policy accept;"
    assert body[-1].startswith("counter drop ")
    assert 'tcp dport 2200 accept comment "SSH (host.ssh_port)"' in body
    assert 'tcp dport { 80, 443 } accept comment "host.firewall.tcp"' in body
    assert "udp dport 51820 accept" in " ".join(body)
    assert sum("2200" in line for line in body) == 1  # listing the SSH port: harmless
    # loopback, replies, ICMP both ways: before anything that drops new traffic
    assert body.index('iifname "lo" accept comment "loopback"') < len(body) - 1
    assert any(line.startswith("meta l4proto ipv6-icmp accept") for line in body)
    assert any(line.startswith("meta l4proto icmp accept") for line in body)


def test_ssh_only_when_nothing_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "fjord.yaml"
    path.write_text(WITHOUT.read_text() + "  firewall: {}\n")
    rs = InputRuleset.from_desired(desired(path))
    assert rs == InputRuleset(22)
    text = rs.render()
    assert "tcp dport 22 accept" in text and "udp" not in text
    assert rs.summary() == "SSH on tcp/22 open; other new connections dropped"


def test_a_port_that_is_not_a_port_never_reaches_the_text() -> None:
    with pytest.raises(ValueError):
        InputRuleset(22, (0,)).render()
    with pytest.raises(ValueError):
        InputRuleset(22, ("80; flush ruleset",)).render()  # type: ignore[arg-type]


def test_the_boot_hook_loads_both_tables_forward_first() -> None:
    hook = firewall.boot_hook()
    forward = hook.index("load /etc/fjord/firewall.nft inet fjord ")
    inp = hook.index("load /etc/fjord/input.nft inet fjord-input ")
    assert forward < inp < hook.rindex("exit 0\n")


# --- validation ------------------------------------------------------------------------------

def schema_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        check(parse(text))
    return [p.render() for p in exc.value.problems]



def test_a_port_listed_twice_is_refused_with_its_key_path() -> None:
    data = cfg(("host.firewall", {"tcp": [80, 443, 80], "udp": [53, 53]}))
    assert problems(data) == [
        ("host.firewall.tcp[2]", "tcp/80 is already listed (host.firewall.tcp[0])"),
        ("host.firewall.udp[1]", "udp/53 is already listed (host.firewall.udp[0])"),
    ]


def test_the_same_port_in_tcp_and_udp_is_fine() -> None:
    assert problems(cfg(("host.firewall", {"tcp": [53], "udp": [53]}))) == []


def test_listing_the_ssh_port_is_harmless() -> None:
    assert problems(cfg(("host.ssh_port", 2200), ("host.firewall", {"tcp": [2200]}))) == []


HOST = ("host:\n  fqdn: h.example.net\n  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}\n"
        "  dns: [192.0.2.53]\n")


@pytest.mark.parametrize("text, message", [
    (HOST + "  firewall: {tcp: [0]}\n", "host.firewall.tcp[0]: "),
    (HOST + "  firewall: {udp: [65536]}\n", "host.firewall.udp[0]: "),
    (HOST + "  firewall: {tcp: ['80']}\n", "host.firewall.tcp[0]: must be a whole number"),
    (HOST + "  firewall: {tcpp: [80]}\n", "host.firewall.tcpp: unknown key 'tcpp'"),
    (HOST + "  firewall: [80]\n", "host.firewall: must be a mapping"),
])
def test_bad_values_are_refused_with_their_key_path(text: str, message: str) -> None:
    [problem] = schema_problems(text)
    assert problem.startswith(message), problem


# --- the catalogue ---------------------------------------------------------------------------


def test_the_kind_is_registered_in_the_network_layer() -> None:
    assert ("network", InputFirewall) in registry()


def test_without_the_key_the_table_and_its_file_are_to_be_absent() -> None:
    live, persisted = input_firewall.resources(desired(WITHOUT))
    assert isinstance(live, InputFirewall) and live.declared is None
    assert live.id == "input-firewall inet fjord-input"
    assert isinstance(persisted, File) and persisted.ensure == "absent"
    assert persisted.path == Path("/etc/fjord/input.nft") and live in persisted.after
    assert [r.id for r in network_resources(desired(WITHOUT))
            if "fjord-input" in r.id or "input.nft" in r.id] == [live.id, persisted.id]


def test_with_the_key_the_file_is_written_after_the_live_load() -> None:
    d = desired()
    live, persisted = input_firewall.resources(d)
    rs = InputRuleset.from_desired(d)
    assert isinstance(persisted, File) and rs is not None
    assert persisted.content == rs.render().encode() and live in persisted.after


# --- the live table, with fakes ---------------------------------------------------------------


class FakeNft:
    """The kernel's tables as nft would list them."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.loads: list[str] = []
        self.deleted: list[tuple[str, str]] = []

    @staticmethod
    def listing(text: str) -> str:
        return text[text.index("table inet fjord-input {"):]

    def declared_listing(self, text: str, fam: str, name: str) -> str:
        return self.listing(text)

    def list_table(self, fam: str, name: str) -> str | None:
        return self.tables.get((fam, name))

    def ruleset(self) -> dict[str, object]:
        return {"nftables": [{"table": {"family": f, "name": n}} for f, n in self.tables]}

    def load(self, text: str) -> None:
        nft.ensure_fjords(text)
        self.loads.append(text)
        self.tables[("inet", "fjord-input")] = self.listing(text)

    def delete_table(self, fam: str, name: str) -> bool:
        self.deleted.append((fam, name))
        return self.tables.pop((fam, name), None) is not None


class FakeSockets:
    def __init__(self, text: str = "") -> None:
        self.text = text

    def listeners(self) -> list[Listener]:
        return parse_listeners(self.text)


SS = """\
LISTEN 0      128          0.0.0.0:2200       0.0.0.0:*    users:(("sshd",pid=612,fd=3))
LISTEN 0      128             [::]:2200          [::]:*    users:(("sshd",pid=612,fd=4))
LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*    users:(("systemd-resolve",pid=401,fd=15))
LISTEN 0      511                *:80               *:*    users:(("nginx",pid=900,fd=6),\
("nginx",pid=901,fd=6))
"""
SSHD_ON_22 = 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=612,fd=3))\n'


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    return tmp_path


def context(d: Desired, fake: FakeNft, sockets: str = SS) -> Context:
    ctx = Context(desired=d)
    ctx.drivers["nft"] = fake
    ctx.drivers["sockets"] = FakeSockets(sockets)
    return ctx


def test_loaded_then_converged_then_reloaded_after_outside_changes(state: Path) -> None:
    d, fake = desired(), FakeNft()
    ctx = context(d, fake)
    [live, persisted] = input_firewall.resources(d)
    plan = make_plan([live, persisted], ctx)
    assert [(c.resource, c.action) for c in plan.changes] == [
        ("input-firewall inet fjord-input", "create"), ("file /etc/fjord/input.nft", "create")]
    assert plan.changes[0].detail == (
        "load nftables table inet fjord-input (SSH on tcp/2200, tcp 80, 443, udp 51820 open; "
        "other new connections dropped)")
    plan.changes[0].run(ctx)
    assert live.changes(ctx) == []
    recorded = json.loads((state / "input-firewall.state").read_text())
    assert recorded["listing"] == fake.tables[("inet", "fjord-input")]
    fake.tables[("inet", "fjord-input")] += "# someone was here\n"
    [change] = live.changes(ctx)
    assert change.detail.endswith("changed outside fjord since it was loaded")
    assert "-# someone was here" in (change.diff_text() or "")


def test_removing_the_key_deletes_the_table_and_forgets_it(state: Path) -> None:
    fake = FakeNft()
    ctx = context(desired(), fake)
    InputFirewall(InputRuleset.from_desired(desired())).changes(ctx)[0].run(ctx)
    assert (state / "input-firewall.state").exists()
    gone = InputFirewall(InputRuleset.from_desired(desired(WITHOUT)))
    [change] = gone.changes(ctx)
    assert (change.action, change.detail) == (
        "delete", "delete nftables table inet fjord-input (not declared)")
    change.run(ctx)
    assert fake.deleted == [("inet", "fjord-input")] and not fake.tables
    assert not (state / "input-firewall.state").exists()
    assert gone.changes(ctx) == []
    assert "is not loaded" in gone.unchanged_reason(ctx)


def test_without_the_key_and_without_nft_nothing_is_planned(state: Path) -> None:
    class Missing(FakeNft):
        def ruleset(self) -> dict[str, object]:
            raise nft.NotInstalled("nft is not installed")

    assert InputFirewall(None).changes(context(desired(WITHOUT), Missing())) == []


def test_without_the_key_an_unreadable_ruleset_is_asked_table_by_table(state: Path) -> None:
    class NoJson(FakeNft):
        def ruleset(self) -> dict[str, object]:
            raise FjordError("nft printed JSON fjord cannot read")

    fake = NoJson()
    fake.tables[("inet", "fjord-input")] = "table inet fjord-input {\n}\n"
    [change] = InputFirewall(None).changes(context(desired(WITHOUT), fake))
    assert change.action == "delete"


# --- never lock the owner out ----------------------------------------------------------------


def test_listening_sockets_are_read_from_ss() -> None:
    listeners = parse_listeners(SS)
    assert [(s.address, s.port, s.programs) for s in listeners] == [
        ("0.0.0.0", 2200, ("sshd",)), ("[::]", 2200, ("sshd",)),
        ("127.0.0.53%lo", 53, ("systemd-resolve",)), ("*", 80, ("nginx", "nginx"))]
    assert [s.loopback for s in listeners] == [False, False, True, False]


def test_sshd_on_a_port_the_table_drops_stops_the_plan_before_anything_changes(
        state: Path) -> None:
    d, fake = desired(), FakeNft()
    ctx = context(d, fake, sockets=SS + SSHD_ON_22)  # sshd still on 22 after moving to 2200
    with pytest.raises(FjordError) as exc:
        make_plan(input_firewall.resources(d), ctx)
    assert "host.firewall would drop tcp/22, where sshd listens" in exc.value.message
    assert "lock you out" in exc.value.message
    assert exc.value.hint == ("add 22 to host.firewall.tcp, or set host.ssh_port to the "
                              "port sshd listens on")
    assert fake.loads == [] and not (state / "input-firewall.state").exists()


def test_sshd_on_loopback_or_an_open_port_is_no_reason_to_refuse() -> None:
    rs = InputRuleset(2200, (22,))
    listeners = parse_listeners(SS + SSHD_ON_22 + SSHD_ON_22.replace("0.0.0.0:22", "[::1]:2022"))
    assert locked_out(listeners, rs) == []
    assert locked_out(listeners, InputRuleset(2200)) == [22]
    # other programs on dropped ports: dropped, as declared
    assert locked_out(parse_listeners(SS), InputRuleset(22)) == [2200]
    assert locked_out([Listener("0.0.0.0", 8080, ("nginx",))], InputRuleset(22)) == []


def test_sshd_moving_after_the_load_is_a_warning(state: Path) -> None:
    d, fake = desired(), FakeNft()
    ctx = context(d, fake)
    live = InputFirewall(InputRuleset.from_desired(d))
    live.changes(ctx)[0].run(ctx)
    ctx.drivers["sockets"] = FakeSockets(SS + SSHD_ON_22)
    assert live.changes(ctx) == []
    [warning] = ctx.warnings
    assert warning.startswith("sshd listens on tcp/22, which table inet fjord-input drops")


def test_without_ss_the_state_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(argv: list[str], **kwargs: Any) -> None:
        raise FjordError(f"program not found: {argv[0]}")

    monkeypatch.setattr(input_firewall.runner, "run", missing)
    with pytest.raises(StateUnreadable, match="cannot list the listening sockets"):
        input_firewall.Sockets().listeners()


# --- fjord check -------------------------------------------------------------------------------


def test_check_has_a_line_for_the_table_only_when_it_is_declared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fjord import check as chk
    from fjord.probes import Probe

    loaded = {("inet", "fjord")}

    def probe(argv: list[str], **kwargs: object) -> Probe:
        there = (argv[-2], argv[-1]) in loaded
        return Probe(list(argv), 0 if there else 1, "", "", 0.0)

    monkeypatch.setattr(chk, "probe", probe)
    monkeypatch.setattr(chk, "ping", lambda *a, **k: (True, "answers"))
    monkeypatch.setattr(chk, "_forwarding", lambda d: (True, "on"))
    monkeypatch.setattr(chk, "_declared", lambda d: iter(()))

    def lines(d: Desired) -> dict[str, tuple[bool, str]]:
        return {r.name: (r.ok, r.detail) for r in chk.host_checks(d)
                if "firewall" in r.name}

    assert lines(desired(WITHOUT)) == {
        "host: firewall loaded": (True, "table inet fjord is loaded")}
    assert lines(desired())["host: input firewall loaded"] == (
        False, "table inet fjord-input is missing: run `fjord apply`")
    loaded.add(("inet", "fjord-input"))
    assert lines(desired())["host: input firewall loaded"] == (
        True, "table inet fjord-input is loaded")
