"""The firewall and NAT of the host: one nftables table, ``inet fjord``, and nothing else.

- postrouting: the private network is masqueraded when it leaves through the external
  bridge; hairpinned port forwards are masqueraded too, so that replies come back
  through the host instead of going straight between containers.
- prerouting/output: each port forward DNATs the public IPv4:port to a container,
  whatever interface it arrives on (the world, another container, the host itself).
- forward, policy drop: replies, containers going out, declared port forwards, and
  ICMPv6 to containers' public addresses; everything else is counted and dropped.

The rendered file is persisted at /etc/fjord/firewall.nft and loaded at boot by an
if-pre-up.d hook, before the interfaces come up. The live table is compared with what
fjord recorded when it loaded it, so a table changed by someone else is reloaded. That
part (:class:`LiveTable`, the hook) also serves fjord's other persisted table, the host
input firewall's (fjord.net.input_firewall).
Other programs' tables are never touched, only read: a foreign base chain that drops
forwarded traffic (Docker, ufw) breaks containers whatever fjord's table says, and the
plan warns about it (docs/firewall.md has the fix).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, Protocol

from fjord.config.desired import Desired
from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.host.packages import Packages
from fjord.net import nft, words
from fjord.net.nft import BaseChain, Nft, Rule, Table
from fjord.state import read_json, state_dir, write_json

FAMILY, NAME = "inet", "fjord"
RULESET_FILE = Path("/etc/fjord/firewall.nft")
BOOT_HOOK = Path("/etc/network/if-pre-up.d/fjord-firewall")
STATE_FILE = "firewall.state"


@dataclass(frozen=True)
class Persisted:
    """One of fjord's tables as the boot hook loads it: the table, the file that holds it,
    what its absence means (said when loading it at boot fails), and the state file (in
    fjord's state directory) where fjord records what it loaded."""

    family: str
    name: str
    file: Path
    state: str
    missing: str

    @property
    def spec(self) -> str:
        return f"{self.family} {self.name}"


FORWARD = Persisted(FAMILY, NAME, RULESET_FILE, STATE_FILE,
                    "containers have no NAT and no filtering")
# The host input firewall (host.firewall, fjord.net.input_firewall): its own table, so that
# its absence from the file removes it whole; loaded at boot by the same hook.
INPUT = Persisted("inet", "fjord-input", Path("/etc/fjord/input.nft"), "input-firewall.state",
                  "the ports of the host itself are not filtered")
# What the boot hook loads, in this order (a file that is not there is skipped).
BOOT_TABLES = (FORWARD, INPUT)

HEADER = (
    "Managed by fjord: `fjord apply` rewrites this file; edit fjord.yaml instead.",
    f"Loaded at boot by {BOOT_HOOK} before the interfaces come up.",
    "The live table: nft list table inet fjord",
)

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")

# ICMPv6 that must reach a public address (RFC 4890, 4.3.1): errors carry path MTU and
# unreachability, echo lets people check a container answers.
ICMPV6_TO_CONTAINERS = (
    "destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
    "echo-request",
)


# --- the ruleset, from the desired state -----------------------------------------------------


@dataclass(frozen=True)
class ResolvedForward:
    """A port forward resolved to its container's address."""

    protocol: str
    port: int
    container: str
    address: IPv4Address
    target_port: int

    def describe(self) -> str:
        return f"{self.protocol}/{self.port} to {self.container}:{self.target_port}"

    def dnat(self, public: IPv4Address, why: str) -> Rule:
        """Traffic to the public IPv4:port goes to the container's address:target port."""
        return Rule(("ip", "daddr", nft.address(public), self.l4(), "dport", nft.port(self.port),
                     "dnat", "ip", "to",
                     f"{nft.address(self.address)}:{nft.port(self.target_port)}"), why)

    def accept(self) -> Rule:
        """Let the DNATed traffic through; the same port reached directly stays closed."""
        return Rule(("ip", "daddr", nft.address(self.address), self.l4(), "dport",
                     nft.port(self.target_port), "ct", "status", "dnat", "accept"),
                    f"port forward {self.describe()}")

    def l4(self) -> str:
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"bad protocol {self.protocol!r}")
        return self.protocol


@dataclass(frozen=True)
class Ruleset:
    """Everything the table is made of; ``render()`` is the file fjord loads."""

    public: IPv4Address
    private: IPv4Network
    external: str
    internal: str
    forwards: tuple[ResolvedForward, ...] = ()
    containers6: tuple[IPv6Address, ...] = ()
    # (MAC of the container's eth0, public IPv6): the only pairs that may leave through
    # the internal bridge; OVS ties each MAC to the container's port (fjord.net.portguard)
    senders6: tuple[tuple[str, IPv6Address], ...] = ()

    @classmethod
    def from_desired(cls, desired: Desired) -> Ruleset:
        host = desired.host
        by_name = {c.name: c for c in desired.containers}
        forwards = tuple(
            ResolvedForward(f.protocol, f.port, f.container, by_name[f.container].ipv4,
                        f.target_port)
            for f in host.forwards
        )
        v6 = tuple(sorted(c.ipv6 for c in desired.containers if c.ipv6 is not None))
        senders = tuple(sorted((c.mac_private.lower(), c.ipv6) for c in desired.containers
                               if c.ipv6 is not None))
        return cls(host.ipv4.address.ip, host.private.address.network, host.switch.external,
                   host.switch.internal, forwards, v6, senders)

    @property
    def hairpin(self) -> bool:
        """Containers reach each other's published ports through the public address."""
        return bool(self.forwards)

    def summary(self) -> str:
        n = len(self.forwards)
        parts = [f"NAT for {self.private} out of {self.external}",
                 f"{n} port forward{'' if n == 1 else 's'}"]
        if self.containers6:
            parts.append(f"IPv6 for {len(self.containers6)} container"
                         f"{'' if len(self.containers6) == 1 else 's'}")
        return ", ".join(parts)

    def table(self) -> Table:
        chains = [prerouting(self), output(self), postrouting(self), forward(self)]
        return Table(FAMILY, NAME, tuple(c for c in chains if c is not None),
                     why="managed by fjord: /etc/fjord/firewall.nft", header=HEADER)

    def render(self) -> str:
        return self.table().render()

    def digest(self) -> str:
        return hashlib.sha256(self.render().encode()).hexdigest()


def prerouting(rs: Ruleset) -> BaseChain | None:
    # No interface match: the same DNAT serves the world and containers (hairpin).
    if not rs.forwards:
        return None
    rules = tuple(f.dnat(rs.public, f"port forward {f.describe()}") for f in rs.forwards)
    return BaseChain("prerouting", "nat", "prerouting", "dstnat", rules=rules)


def output(rs: Ruleset) -> BaseChain | None:
    # Connections from the host itself to its public IPv4:port reach the container too.
    if not rs.forwards:
        return None
    rules = tuple(f.dnat(rs.public, f"port forward {f.describe()}, from the host")
                  for f in rs.forwards)
    return BaseChain("output", "nat", "output", "-100", rules=rules)


def postrouting(rs: Ruleset) -> BaseChain:
    private = nft.address(rs.private)
    rules = [Rule(("oifname", nft.ifname(rs.external), "ip", "saddr", private, "masquerade"),
                  "containers to the world")]
    if rs.hairpin:
        # Without it the target answers the client directly on the internal bridge, from
        # its private address, and the client drops a reply it never asked for.
        rules.append(Rule(("oifname", nft.ifname(rs.internal), "ip", "saddr", private,
                           "ct", "status", "dnat", "masquerade"),
                          "hairpin: a container reaching a port forward"))
    return BaseChain("postrouting", "nat", "postrouting", "srcnat", rules=tuple(rules))


def forward(rs: Ruleset) -> BaseChain:
    rules = [
        Rule(("ct", "state", "established,related", "accept"), "replies"),
        Rule(("ct", "state", "invalid", "drop"), "not part of any connection"),
        # The source check keeps a container from sending spoofed addresses to the world.
        Rule(("iifname", nft.ifname(rs.internal), "ip", "saddr", nft.address(rs.private),
              "accept"), "containers out"),
    ]
    rules += [f.accept() for f in rs.forwards]
    if rs.containers6:
        v6 = nft.anonymous_set(nft.address(a) for a in rs.containers6)
        if rs.senders6:
            # each public address only from its own container's MAC: a neighbour's
            # address as source is dropped even if it got past the switch
            pairs = nft.concatenation_set((words.mac(m), nft.address(a)) for m, a in rs.senders6)
            out6 = Rule(("iifname", nft.ifname(rs.internal), "ether", "saddr", ".", "ip6",
                         "saddr", pairs, "accept"), "containers out (IPv6), by sender MAC")
        else:
            out6 = Rule(("iifname", nft.ifname(rs.internal), "ip6", "saddr", v6, "accept"),
                        "containers out (IPv6)")
        rules += [
            out6,
            Rule(("ip6", "daddr", v6, "icmpv6", "type", nft.anonymous_set(ICMPV6_TO_CONTAINERS),
                  "accept"), "ICMPv6 to containers: errors, path MTU, echo"),
        ]
    rules.append(Rule(("counter",), "undeclared: dropped by the policy"))
    return BaseChain("forward", "filter", "forward", "filter", policy="drop", rules=tuple(rules))


# --- the boot hook ---------------------------------------------------------------------------


def boot_hook(tables: Sequence[Persisted] = BOOT_TABLES) -> str:
    """if-pre-up.d script: ifupdown runs it before each interface comes up (lo first);
    it loads each of fjord's persisted tables once per boot, when its file is there and
    the table is not in the kernel yet.

    A failure is reported but does not stop the interface: on a rented server an
    interface left down means no way in to fix the firewall."""
    loads = []
    for t in tables:
        path = str(t.file)
        if not _SAFE_PATH.fullmatch(path):
            raise ValueError(f"{path!r} cannot be written into a shell script")
        loads.append(" ".join(shlex.quote(word) for word in (
            "load", path, nft.family(t.family), nft.ident(t.name), t.missing)))
    return """#!/bin/sh
# Managed by fjord: loads fjord's nftables tables before the interfaces come up.
# ifupdown runs it for every interface; each table is loaded once per boot.
PATH=/usr/sbin:/usr/bin:/sbin:/bin

command -v nft >/dev/null 2>&1 || exit 0

# load FILE FAMILY TABLE MEANING: FILE, unless it is not there or TABLE is loaded already
load() {
    [ -r "$1" ] || return 0
    nft list table "$2" "$3" >/dev/null 2>&1 && return 0
    if ! nft -f "$1"; then
        echo "fjord-firewall: loading $1 failed: $4" >&2
        logger -t fjord-firewall "loading $1 failed" 2>/dev/null || true
    fi
}

""" + "\n".join(loads) + "\nexit 0\n"


# --- the live table --------------------------------------------------------------------------


def state_path(table: Persisted = FORWARD) -> Path:
    return state_dir() / table.state


class Declared(Protocol):
    """A table as declared: its file's text, that text's hash, and a line for the plan."""

    def render(self) -> str: ...

    def digest(self) -> str: ...

    def summary(self) -> str: ...


class LiveTable(Resource):
    """One of fjord's tables, live: loaded atomically when absent, different from the
    declared ruleset, or changed by someone else since fjord loaded it (the listing it
    recorded then, in ``table.state``). ``ruleset`` None: the table must not be there
    (deleted, its record forgotten). A kind of table adds its own checks in
    :meth:`inspect`."""

    def __init__(self, table: Persisted, ruleset: Declared | None, *,
                 after: Sequence[Reference] = ()) -> None:
        super().__init__(table.spec)
        self.table = table
        self.ruleset = ruleset
        self.after = after

    def inspect(self, ctx: Context, driver: Nft, loading: bool) -> None:
        """What the kind checks besides the table (``loading``: a load is planned): a
        warning, or a FjordError that stops the plan before anything changes."""

    def changes(self, ctx: Context) -> list[Change]:
        driver = ctx.open(nft.DRIVER)
        if self.ruleset is None:
            return self._absent(driver)
        t = self.table
        live = driver.list_table(t.family, t.name)
        what = f"load nftables table {t.spec} ({self.ruleset.summary()})"
        out: list[Change] = []
        if live is None:
            out = [Change(self.id, "create", what, self._load,
                          diff=lambda: self._diff(driver, None))]
        elif (reason := self._stale(read_json(state_path(t)) or {}, live)) is not None:
            out = [Change(self.id, "update", f"re{what}: {reason}", self._load,
                          diff=lambda: self._diff(driver, live))]
        self.inspect(ctx, driver, bool(out))
        return out

    def _absent(self, driver: Nft) -> list[Change]:
        t = self.table
        try:  # the ruleset the plan reads anyway (the forward firewall's foreign tables)
            there = nft.has_table(driver.ruleset(), t.family, t.name)
        except nft.NotInstalled:
            return []  # no nft, no table
        except FjordError:  # JSON fjord cannot read: ask for the table alone
            there = driver.list_table(t.family, t.name) is not None
        if not there:
            return []
        return [Change(self.id, "delete", f"delete nftables table {t.spec} (not declared)",
                       self._delete)]

    def _diff(self, driver: Nft, live: str | None) -> str:
        """The live table against the declared one, both as ``nft -s list table`` lists
        them (for ``plan -v``: it loads the declared ruleset in a throwaway namespace)."""
        assert self.ruleset is not None
        t = self.table
        try:
            declared = driver.declared_listing(self.ruleset.render(), t.family, t.name)
        except FjordError as exc:
            return f"(the declared table could not be listed: {exc.message})\n"
        where = f"table {t.spec}"
        diff = difflib.unified_diff((live or "").splitlines(keepends=True),
                                    declared.splitlines(keepends=True),
                                    f"{where} (nft list table)" if live is not None
                                    else "/dev/null", f"{where} (declared)")
        return "".join(d if d.endswith("\n") else d + "\n" for d in diff)

    def _stale(self, recorded: Mapping[str, Any], live: str) -> str | None:
        assert self.ruleset is not None
        if recorded.get("sha256") is None:
            return "not loaded by fjord"
        if recorded["sha256"] != self.ruleset.digest():
            return "the declared ruleset changed"
        if recorded.get("listing") != live:
            return "changed outside fjord since it was loaded"
        return None

    def unchanged_reason(self, ctx: Context) -> str:
        if self.ruleset is None:
            return f"table {self.table.spec} is not loaded (not declared)"
        return f"table {self.table.spec} is loaded as declared ({self.ruleset.summary()})"

    def _load(self, ctx: Context) -> None:
        assert self.ruleset is not None
        t = self.table
        driver = ctx.open(nft.DRIVER)
        driver.load(self.ruleset.render())
        write_json(state_path(t), {
            "version": 1,
            "table": t.spec,
            "sha256": self.ruleset.digest(),
            "listing": driver.list_table(t.family, t.name),
        })

    def _delete(self, ctx: Context) -> None:
        t = self.table
        ctx.open(nft.DRIVER).delete_table(t.family, t.name)
        state_path(t).unlink(missing_ok=True)


class Firewall(LiveTable):
    """The live ``table inet fjord``: loaded atomically when absent, different from the
    declared ruleset, or changed by someone else since fjord loaded it."""

    kind = "nftables"

    def __init__(self, ruleset: Ruleset, *,
                 after: Sequence[Reference] = ()) -> None:
        super().__init__(FORWARD, ruleset, after=after)
        self.declared = ruleset

    def inspect(self, ctx: Context, driver: Nft, loading: bool) -> None:
        # Only advice: a ruleset fjord cannot read must not stop fjord's own table.
        try:
            data = driver.ruleset()
        except FjordError as exc:
            ctx.warn(f"could not look for other firewalls ({exc.message}): if containers "
                     "lose their traffic, see docs/firewall.md")
            return
        for block in foreign_blocks(data, self.declared):
            ctx.warn(block.message())


def resources(desired: Desired) -> list[Resource]:
    """The live table, then its persisted copy and the hook that loads it at boot.

    The file is written after the live load: a ruleset the kernel refuses never
    reaches the file the next boot would load."""
    ruleset = Ruleset.from_desired(desired)
    live = Firewall(ruleset, after=(Packages,))  # nft comes with the nftables package
    return [
        live,
        File(RULESET_FILE, ruleset.render(), mode=0o644, after=(live,),
             reason="the firewall loaded at boot"),
        File(BOOT_HOOK, boot_hook(), mode=0o755,
             reason="load the firewall before the interfaces come up"),
    ]


# --- other firewalls on the host -------------------------------------------------------------


@dataclass(frozen=True)
class ForeignBlock:
    """Another table's forward chain that drops what fjord's containers need."""

    family: str
    table: str
    chain: str
    reason: str
    internal: str
    by_rule: bool = False  # a rule naming fjord's interface, rather than a default
    docker: bool = False
    ufw: bool = False

    def message(self) -> str:
        return (f"another firewall drops the containers' traffic: table {self.family} "
                f"{self.table}, chain {self.chain} {self.reason}, whatever fjord's table "
                f"accepts. Fix: {self.fix()} (see docs/firewall.md)")

    def fix(self) -> str:
        i = self.internal
        where = f"{self.family} {self.table} {self.chain}"
        if self.by_rule:
            return f"remove that rule (nft -a list chain {where} shows its handle)"
        if self.docker:
            return (f"iptables -I DOCKER-USER -i {i} -j ACCEPT; "
                    f"iptables -I DOCKER-USER -o {i} -j ACCEPT")
        if self.ufw:
            return f"ufw route allow in on {i}; ufw route allow out on {i}"
        return (f"nft insert rule {where} iifname {i} accept; "
                f"nft insert rule {where} oifname {i} accept")


@dataclass(frozen=True)
class _RuleFacts:
    """What a rule of `nft -j` says, as far as fjord cares."""

    interfaces: tuple[tuple[str, str], ...]  # ("iifname"|"oifname", name) equalities
    other_conditions: bool
    verdict: str | None  # accept, drop, reject, jump, goto, return
    target: str | None


_IFACE_KEYS = ("iifname", "oifname")
_IGNORED = ("counter", "comment", "log", "limit", "nflog")


def _rule_facts(exprs: Sequence[Any]) -> _RuleFacts:
    interfaces: list[tuple[str, str]] = []
    other = False
    verdict = target = None
    for expr in exprs:
        if not isinstance(expr, dict) or len(expr) != 1:
            other = True
            continue
        (key, value), = expr.items()
        if key == "match":
            iface = _interface_match(value)
            if iface is None:
                other = True
            else:
                interfaces.append(iface)
        elif key in ("accept", "drop", "reject", "return"):
            verdict = key
        elif key in ("jump", "goto"):
            verdict = key
            target = value.get("target") if isinstance(value, dict) else None
        elif key == "xt" and isinstance(value, dict) and value.get("type") == "target":
            verdict = str(value.get("name", "")).lower() or None
        elif key not in _IGNORED:
            other = True
    return _RuleFacts(tuple(interfaces), other, verdict, target)


def _interface_match(match: Any) -> tuple[str, str] | None:
    if not isinstance(match, dict) or match.get("op") not in ("==", "in"):
        return None
    left, right = match.get("left"), match.get("right")
    key = left.get("meta", {}).get("key") if isinstance(left, dict) else None
    if key in _IFACE_KEYS and isinstance(right, str):
        return key, right
    return None


@dataclass
class _Chains:
    """The ruleset of `nft -j list ruleset`, by chain."""

    base: list[dict[str, Any]]
    rules: dict[tuple[str, str, str], list[_RuleFacts]]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> _Chains:
        base: list[dict[str, Any]] = []
        rules: dict[tuple[str, str, str], list[_RuleFacts]] = {}
        items = data.get("nftables")
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if isinstance(chain := item.get("chain"), dict) and chain.get("hook"):
                base.append(chain)
            elif isinstance(rule := item.get("rule"), dict):
                key = (str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))
                exprs = rule.get("expr")
                rules.setdefault(key, []).append(
                    _rule_facts(exprs if isinstance(exprs, list) else []))
        return cls(base, rules)

    def walk(self, fam: str, table: str, chain: str, depth: int = 0,
             conditional: bool = False) -> Iterator[tuple[_RuleFacts, bool]]:
        """Rules in evaluation order, jumps followed; with whether a condition guards them."""
        if depth > 16:
            return
        for facts in self.rules.get((fam, table, chain), []):
            unconditional = not facts.interfaces and not facts.other_conditions
            if facts.verdict == "return" and unconditional:
                return
            if facts.verdict in ("jump", "goto") and facts.target:
                guarded = conditional or bool(facts.interfaces) or facts.other_conditions
                yield from self.walk(fam, table, facts.target, depth + 1, guarded)
            else:
                yield facts, conditional


def _needs(fam: str, rs: Ruleset) -> set[tuple[str, str]]:
    """The accepts a foreign forward chain of family ``fam`` must have for fjord to work."""
    need: set[tuple[str, str]] = set()
    if fam in ("ip", "inet"):
        need |= {("iifname", rs.internal), ("oifname", rs.internal)}
    if fam in ("ip6", "inet") and rs.containers6:
        # Routed IPv6 goes through the internal bridge too (routes to each /128 there).
        need |= {("iifname", rs.internal), ("oifname", rs.internal)}
    return need


def foreign_blocks(data: Mapping[str, Any], rs: Ruleset) -> list[ForeignBlock]:
    """Base chains of other tables, on hook forward, that drop fjord's traffic.

    Best effort: a chain with policy drop (or an unconditional drop/reject) counts as
    blocking unless it first accepts each of fjord's interfaces outright; a drop/reject
    rule naming one of fjord's interfaces always counts."""
    chains = _Chains.parse(data)
    out: list[ForeignBlock] = []
    ours = {rs.internal, rs.external}
    for chain in chains.base:
        fam, table, name = chain.get("family"), chain.get("table"), chain.get("name")
        if chain.get("hook") != "forward" or (fam, table) == (FAMILY, NAME):
            continue
        if not (isinstance(fam, str) and isinstance(table, str) and isinstance(name, str)):
            continue
        need = _needs(fam, rs)
        if not need:
            continue
        found = _blocking(chains, fam, table, name, chain.get("policy"), need, ours)
        if found:
            names = {n for (f, t, n) in chains.rules if (f, t) == (fam, table)}
            out.append(ForeignBlock(fam, table, name, found[0], rs.internal, by_rule=found[1],
                                    docker="DOCKER-USER" in names,
                                    ufw=any(n.startswith("ufw-") for n in names)))
    return out


def _blocking(chains: _Chains, fam: str, table: str, name: str, policy: Any,
              need: set[tuple[str, str]], ours: set[str]) -> tuple[str, bool] | None:
    """Why the chain drops fjord's traffic, and whether a rule names fjord's interface."""
    accepted: set[tuple[str, str]] = set()
    for facts, conditional in chains.walk(fam, table, name):
        outright = not conditional and not facts.other_conditions
        if facts.verdict == "accept" and outright and len(facts.interfaces) == 1:
            accepted.update(facts.interfaces)
        if facts.verdict not in ("drop", "reject"):
            continue
        named = [n for _, n in facts.interfaces if n in ours]
        if named:
            return f"has a rule that {facts.verdict}s traffic of {named[0]}", True
        if outright and not facts.interfaces and not need <= accepted:
            return f"has a rule that {facts.verdict}s all forwarded traffic", False
    if policy == "drop" and not need <= accepted:
        return "has policy drop on hook forward", False
    return None
