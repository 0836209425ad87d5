"""The firewall ruleset: golden files, safe words, the boot hook, the live-table resource.

Golden files live in tests/unit/golden/firewall/; after reviewing a change of the
rendering, regenerate them with FJORD_REGENERATE=1. The `nft -c` checks need root and
run in a throwaway network namespace (skipped otherwise)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from goldens import check_golden
from told import tell

from fjord.config.desired import Desired, load
from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.net import firewall, nft
from fjord.net.firewall import Firewall, ResolvedForward, Ruleset

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "firewall"
CONFIGS = {
    "lab": ROOT / "examples" / "lab.yaml",
    "forwards": GOLDEN / "forwards.yaml",
    "ipv4-only": GOLDEN / "ipv4-only.yaml",
    "no-containers": GOLDEN / "no-containers.yaml",
}


def desired(name: str) -> Desired:
    return load(str(CONFIGS[name]))


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ruleset_matches_golden_file(name: str) -> None:
    golden(f"{name}.nft", Ruleset.from_desired(desired(name)).render())


def test_boot_hook_matches_golden_file() -> None:
    golden("boot-hook.sh", firewall.boot_hook())


def test_ruleset_replaces_only_its_own_table() -> None:
    text = Ruleset.from_desired(desired("lab")).render()
    assert nft.touched_tables(text) == [("inet", "fjord")] * 3
    # The replace idiom: declare (so that delete cannot fail), delete, redeclare in full.
    statements = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert statements[:3] == ["table inet fjord", "delete table inet fjord", "table inet fjord {"]


def test_lab_ruleset_has_nat_forward_hairpin_and_drop_policy() -> None:
    text = Ruleset.from_desired(desired("lab")).render()
    assert 'oifname "br-ex" ip saddr 10.1.0.0/16 masquerade' in text
    assert "ip daddr 192.0.2.5 tcp dport 2222 dnat ip to 10.1.0.2:22" in text
    assert 'oifname "br-int" ip saddr 10.1.0.0/16 ct status dnat masquerade' in text
    assert "type filter hook forward priority filter; policy drop;" in text
    assert "ip daddr 10.1.0.2 tcp dport 22 ct status dnat accept" in text


def test_dnat_rule_in_prerouting_matches_no_interface() -> None:
    # One rule serves the world and the containers (hairpin): no iifname on DNAT.
    chain = firewall.prerouting(Ruleset.from_desired(desired("forwards")))
    assert chain is not None
    assert all("iifname" not in rule.words for rule in chain.rules)


def test_udp_and_tcp_forwards_of_the_same_port_are_both_rendered() -> None:
    text = Ruleset.from_desired(desired("forwards")).render()
    assert "ip daddr 203.0.113.40 udp dport 53 dnat ip to 172.20.0.12:53" in text
    assert "ip daddr 203.0.113.40 tcp dport 53 dnat ip to 172.20.0.12:53" in text
    assert "ip daddr 203.0.113.40 udp dport 51820 dnat ip to 172.20.0.10:4500" in text
    assert "ip daddr 172.20.0.10 udp dport 4500 ct status dnat accept" in text


def test_ipv4_only_host_has_no_ipv6_rules() -> None:
    text = Ruleset.from_desired(desired("ipv4-only")).render()
    assert "ip6" not in text and "icmpv6" not in text


def test_no_forwards_means_no_dnat_and_no_hairpin() -> None:
    rs = Ruleset.from_desired(desired("no-containers"))
    text = rs.render()
    assert not rs.hairpin
    assert "dnat" not in text and "chain prerouting" not in text and "chain output" not in text
    assert "masquerade" in text


def test_summary_reads_like_a_checklist_line() -> None:
    assert Ruleset.from_desired(desired("lab")).summary() == (
        "NAT for 10.1.0.0/16 out of br-ex, 1 port forward, IPv6 for 1 container")
    assert Ruleset.from_desired(desired("forwards")).summary() == (
        "NAT for 172.20.0.0/24 out of ex0, 6 port forwards, IPv6 for 3 containers")


# --- safe words ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ['br-int" accept; flush ruleset; #', "br int", "", "a" * 16,
                                 "br-int\n", "-x"])
def test_interface_names_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        nft.ifname(bad)


@pytest.mark.parametrize("bad", ['x" drop', "two\nlines", "{ brace }", "semi#colon", ""])
def test_comments_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        nft.comment(bad)


def test_only_address_objects_become_addresses() -> None:
    assert nft.address(IPv4Address("10.1.0.2")) == "10.1.0.2"
    with pytest.raises(TypeError):
        nft.address("10.1.0.2; flush ruleset")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 65536, -1, True, "22"])
def test_ports_are_checked(bad: object) -> None:
    with pytest.raises(ValueError):
        nft.port(bad)  # type: ignore[arg-type]


def test_a_forged_protocol_cannot_reach_the_ruleset() -> None:
    rs = Ruleset(IPv4Address("192.0.2.5"), IPv4Network("10.1.0.0/16"), "br-ex", "br-int",
                 (ResolvedForward("tcp; flush ruleset", 1, "x", IPv4Address("10.1.0.2"), 1),))
    with pytest.raises(ValueError):
        rs.render()


@pytest.mark.parametrize("text", [
    "flush ruleset\n",
    "table ip filter {\n}\n",
    "delete table inet fjord\ndelete table ip nat\n",
    "include \"/etc/nftables.conf\"\n",
    "# nothing\n",
])
def test_text_touching_anything_but_fjords_tables_is_refused(text: str) -> None:
    with pytest.raises(FjordError):
        nft.ensure_fjords(text)


def test_load_table_refuses_before_running_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("nft must not run")

    monkeypatch.setattr(nft.runner, "run", boom)
    with pytest.raises(FjordError, match="fjord only replaces its own tables"):
        nft.load_table("table ip filter\ndelete table ip filter\ntable ip filter {\n}\n")


# --- the boot hook ---------------------------------------------------------------------------


def test_boot_hook_is_posix_sh() -> None:
    shells = [s for s in ("dash", "sh") if shutil.which(s)]
    for shell in shells:
        subprocess.run([shell, "-n"], input=firewall.boot_hook(), text=True, check=True)
    assert firewall.boot_hook().startswith("#!/bin/sh\n")


def test_boot_hook_never_stops_the_interface() -> None:
    # A failing `nft -f` must not make ifup give up on the uplink: exit 0 in all cases.
    lines = firewall.boot_hook().splitlines()
    assert lines[-1] == "exit 0"
    assert "set -e" not in lines


def test_boot_hook_refuses_a_path_it_cannot_quote() -> None:
    with pytest.raises(ValueError):
        firewall.boot_hook((replace(firewall.FORWARD,
                                    file=Path("/etc/fjord/fire wall.nft; reboot")),))


def test_resources_persist_the_ruleset_after_the_live_load() -> None:
    d = desired("lab")
    live, ruleset_file, hook = firewall.resources(d)
    assert isinstance(live, Firewall) and live.id == "nftables inet fjord"
    assert isinstance(ruleset_file, File) and isinstance(hook, File)
    assert ruleset_file.path == Path("/etc/fjord/firewall.nft")
    assert ruleset_file.content == Ruleset.from_desired(d).render().encode()
    assert live in ruleset_file.after
    assert hook.path == Path("/etc/network/if-pre-up.d/fjord-firewall") and hook.mode == 0o755


# --- the live table, with a fake nft ---------------------------------------------------------


class FakeNft:
    """The kernel's tables as nft would list them; ``listing`` mimics `nft -s list table`."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.foreign: dict[str, object] = {"nftables": []}
        self.loads: list[str] = []

    @staticmethod
    def listing(text: str) -> str:
        return text[text.index("table inet fjord {"):]

    def declared_listing(self, text: str, fam: str, name: str) -> str:
        return self.listing(text)

    def list_table(self, fam: str, name: str) -> str | None:
        return self.tables.get((fam, name))

    def ruleset(self) -> dict[str, object]:
        return self.foreign

    def load(self, text: str) -> None:
        nft.ensure_fjords(text)
        self.loads.append(text)
        self.tables[("inet", "fjord")] = self.listing(text)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    return tmp_path


def context(d: Desired, fake: FakeNft) -> Context:
    ctx = Context(desired=d)
    ctx.drivers["nft"] = fake
    return ctx


def test_absent_table_is_created_then_converged(state: Path) -> None:
    d, fake = desired("lab"), FakeNft()
    ctx = context(d, fake)
    resource = Firewall(Ruleset.from_desired(d))
    [change] = resource.changes(ctx)
    assert change.action == "create"
    assert change.detail == ("load nftables table inet fjord (NAT for 10.1.0.0/16 out of "
                             "br-ex, 1 port forward, IPv6 for 1 container)")
    change.run(ctx)
    assert resource.changes(ctx) == []
    assert len(fake.loads) == 1
    assert "loaded as declared" in resource.unchanged_reason(ctx)


def test_a_changed_declaration_reloads(state: Path) -> None:
    d, fake = desired("lab"), FakeNft()
    ctx = context(d, fake)
    rs = Ruleset.from_desired(d)
    Firewall(rs).changes(ctx)[0].run(ctx)
    more = replace(rs, forwards=(*rs.forwards, ResolvedForward(
        "udp", 5353, "test", IPv4Address("10.1.0.2"), 53)))
    [change] = Firewall(more).changes(ctx)
    assert change.action == "update"
    assert change.detail.endswith("2 port forwards, IPv6 for 1 container): "
                                  "the declared ruleset changed")
    change.run(ctx)
    assert Firewall(more).changes(ctx) == []


def test_drift_by_someone_else_is_reloaded_with_a_diff(state: Path) -> None:
    d, fake = desired("lab"), FakeNft()
    ctx = context(d, fake)
    resource = Firewall(Ruleset.from_desired(d))
    resource.changes(ctx)[0].run(ctx)
    fake.tables[("inet", "fjord")] += "# someone was here\n"
    [change] = resource.changes(ctx)
    assert change.detail.endswith("changed outside fjord since it was loaded")
    assert "-# someone was here" in (change.diff_text() or "")
    change.run(ctx)
    assert resource.changes(ctx) == []


def test_a_table_fjord_did_not_record_is_reloaded(state: Path) -> None:
    d, fake = desired("lab"), FakeNft()
    rs = Ruleset.from_desired(d)
    fake.tables[("inet", "fjord")] = FakeNft.listing(rs.render())
    [change] = Firewall(rs).changes(context(d, fake))
    assert change.action == "update" and change.detail.endswith("not loaded by fjord")


def test_state_records_hash_and_listing(state: Path) -> None:
    import json

    d, fake = desired("lab"), FakeNft()
    ctx = context(d, fake)
    rs = Ruleset.from_desired(d)
    Firewall(rs).changes(ctx)[0].run(ctx)
    recorded = json.loads((state / "firewall.state").read_text())
    assert recorded["sha256"] == rs.digest()
    assert recorded["listing"] == fake.tables[("inet", "fjord")]


# --- nft -c, as root, in a throwaway network namespace --------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="nft -c needs root (CAP_NET_ADMIN), nft and ip")


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> str:
    name = f"fjord-t-{secrets.token_hex(4)}"
    # Registered before the namespace exists: whatever fails next, it is removed.
    request.addfinalizer(lambda: subprocess.run(["ip", "netns", "del", name],
                                                capture_output=True, check=False))
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    return name


@needs_root
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_rendered_ruleset_passes_nft_check(name: str, netns: str) -> None:
    driver = nft.Nft(prefix=("ip", "netns", "exec", netns))
    driver.check(Ruleset.from_desired(desired(name)).render())


@needs_root
def test_golden_files_pass_nft_check(netns: str) -> None:
    for path in sorted(GOLDEN.glob("*.nft")):
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-c", "-f", str(path)],
                       check=True, capture_output=True, text=True)


def test_other_firewalls_unreadable_is_a_warning_not_a_failure(state: Path) -> None:
    class Unreadable(FakeNft):
        def ruleset(self) -> dict[str, object]:
            raise FjordError("nft printed JSON fjord cannot read")

    d = desired("lab")
    ctx = context(d, Unreadable())
    [change] = Firewall(Ruleset.from_desired(d)).changes(ctx)
    assert change.action == "create"
    assert ctx.warnings and "could not look for other firewalls" in ctx.warnings[0]


def test_without_nft_the_state_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fjord.engine.plan import StateUnreadable

    monkeypatch.setattr(nft, "NFT", "/nonexistent/nft")
    with pytest.raises(StateUnreadable, match="nft is not installed"):
        nft.Nft().list_table("inet", "fjord")


def test_nft_runs_only_after_the_packages() -> None:
    from fjord.host.packages import Packages

    live = firewall.resources(desired("lab"))[0]
    assert Packages in live.after


def test_without_root_the_state_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fjord.engine.plan import StateUnreadable
    from fjord.runner import Result

    def refused(argv: list[str], **kwargs: object) -> Result:
        return Result(list(argv), 1, "", "Operation not permitted (you must be root)\n", 0.0)

    monkeypatch.setattr(nft.runner, "run", refused)
    with pytest.raises(StateUnreadable, match="needs root"):
        nft.Nft().list_table("inet", "fjord")


def test_an_absent_table_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from fjord.runner import Result

    def absent(argv: list[str], **kwargs: object) -> Result:
        return Result(list(argv), 1, "", "Error: No such file or directory\n", 0.0)

    monkeypatch.setattr(nft.runner, "run", absent)
    assert nft.Nft().list_table("inet", "fjord") is None


@pytest.mark.parametrize("text", [
    "table inet fjord {\n}; flush ruleset\n",
    "table inet fjord { chain c { } } flush ruleset\n",
    'table inet fjord {\n\tcomment "}"\n}\nflush ruleset\n',
    'table inet fjord {\n\tinclude "/etc/nftables.conf"\n}\n',
    "table inet fjord {\n",
    "}\ntable inet fjord {\n}\n",
])
def test_statements_hidden_after_a_block_or_in_a_string_are_found(text: str) -> None:
    with pytest.raises(FjordError):
        nft.ensure_fjords(text)


def test_comments_and_strings_do_not_confuse_the_guard() -> None:
    text = ('# include nothing; flush ruleset\ntable netdev fjord-uplink\n'
            'table netdev fjord-uplink {\n\tcomment "a { b ; c # d"\n}\n')
    assert nft.ensure_fjords(text) == [("netdev", "fjord-uplink")] * 2
