"""A small nftables driver: build rule text safely, check it, load fjord's tables atomically.

fjord owns its own tables only. Every ruleset it loads replaces whole tables named
``fjord…`` with the standard idiom (declare, delete, redeclare in one ``nft -f``
transaction); anything else (``flush ruleset``, another program's table) is refused
before nft even sees it. Text is always checked with ``nft -c`` before it is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from fjord import runner
from fjord.engine.context import DriverKey
from fjord.engine.plan import StateUnreadable
from fjord.errors import FjordError
from fjord.net.words import IFNAME

NFT = "nft"
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
TIMEOUT = 30.0

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_COMMENT = re.compile(r"^[A-Za-z0-9 _.,:;/()+=@<>'*-]{1,128}$")
_PRIORITY = re.compile(
    r"^(-?[0-9]{1,4}|(raw|mangle|dstnat|filter|security|srcnat)( [+-] [0-9]{1,3})?)$")


# --- words of the nft language, each from a typed value ------------------------------------


def ifname(name: str) -> str:
    """An interface name as an nft string literal."""
    if not IFNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an interface name")
    return f'"{name}"'


def ident(name: str) -> str:
    """A table or chain name (bare word)."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"{name!r} is not an nft identifier")
    return name


def comment(text: str) -> str:
    """A comment as an nft string literal: plain printable text, no quotes, no newline."""
    if not _COMMENT.fullmatch(text):
        raise ValueError(f"{text!r} cannot be an nft comment")
    return f'comment "{text}"'


def family(name: str) -> str:
    if name not in FAMILIES:
        raise ValueError(f"{name!r} is not an nft family")
    return name


def address(value: IPv4Address | IPv6Address | IPv4Network | IPv6Network) -> str:
    """An address or network: only ``ipaddress`` objects, whose text is always safe."""
    if not isinstance(value, IPv4Address | IPv6Address | IPv4Network | IPv6Network):
        raise TypeError(f"{value!r} is not an address")
    return str(value)


def concatenation_set(elements: Iterable[Sequence[str]]) -> str:
    """``{ a . b, c . d }``: a set of concatenations, braces even for one element
    (nft refuses a bare concatenation as a value). Elements are already safe words."""
    items = [" . ".join(parts) for parts in elements]
    if not items:
        raise ValueError("an empty set matches nothing")
    return "{ " + ", ".join(items) + " }"


def port(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{value!r} is not a port number")
    return str(value)


def anonymous_set(words: Iterable[str]) -> str:
    """``{ a, b }``, or the single element alone (nft lists a one-element set that way)."""
    items = list(words)
    if not items:
        raise ValueError("an empty set matches nothing")
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


# --- tables as data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule: words already made safe by the functions above, and a comment."""

    words: tuple[str, ...]
    why: str | None = None

    def render(self) -> str:
        words = list(self.words)
        if self.why:
            words.append(comment(self.why))
        return " ".join(words)


@dataclass(frozen=True)
class BaseChain:
    """A chain attached to a hook (``type filter hook forward …``)."""

    name: str
    type: str
    hook: str
    priority: str
    policy: str = "accept"
    device: str | None = None
    rules: tuple[Rule, ...] = ()

    def render(self) -> list[str]:
        device = f" device {ifname(self.device)}" if self.device else ""
        if self.type not in ("filter", "nat", "route"):
            raise ValueError(f"bad chain type {self.type!r}")
        if self.policy not in ("accept", "drop"):
            raise ValueError(f"bad policy {self.policy!r}")
        if not _PRIORITY.fullmatch(self.priority):
            raise ValueError(f"bad priority {self.priority!r}")
        head = (f"type {self.type} hook {ident(self.hook)}{device} "
                f"priority {self.priority}; policy {self.policy};")
        return [f"\tchain {ident(self.name)} {{", f"\t\t{head}",
                *(f"\t\t{r.render()}" for r in self.rules), "\t}"]


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    chains: tuple[BaseChain, ...]
    why: str | None = None
    header: tuple[str, ...] = field(default=())

    @property
    def spec(self) -> str:
        return f"{family(self.family)} {ident(self.name)}"

    def render(self) -> str:
        """The whole file: header comments, then the atomic replace of this one table."""
        lines = [f"# {line}".rstrip() for line in self.header]
        lines += [
            "# Replace fjord's table atomically; other tables are left alone.",
            f"table {self.spec}",
            f"delete table {self.spec}",
            "",
            f"table {self.spec} {{",
        ]
        if self.why:
            lines.append(f"\t{comment(self.why)}")
        for i, chain in enumerate(self.chains):
            if i:
                lines.append("")
            lines += chain.render()
        lines.append("}")
        return "\n".join(lines) + "\n"


# --- what a ruleset text may touch ----------------------------------------------------------

_TOP = re.compile(
    r"((add|create|delete|destroy) )?table (?P<family>[a-z0-9]+) (?P<name>[A-Za-z0-9_.-]+)\s*")


def _code(text: str) -> str:
    """``text`` with quoted strings blanked and comments removed: what nft executes.
    Blanking strings first keeps a brace, ``;`` or ``#`` inside one from hiding anything."""
    return re.sub(r"#[^\n]*", "", re.sub(r'"[^"\n]*"', '""', text))


def _top_level(text: str) -> list[str]:
    """The top-level statements of ``text``, block contents left out."""
    statements: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in _code(text) + "\n":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise FjordError("nft text has an unbalanced '}'")
        elif depth == 0 and ch in ";\n":
            statements.append("".join(current).strip())
            current = []
        elif depth == 0:
            current.append(ch)
    if depth:
        raise FjordError("nft text has an unclosed '{'")
    return [st for st in statements if st]


def touched_tables(text: str) -> list[tuple[str, str]]:
    """The (family, name) of every table the top level of ``text`` declares or deletes.

    Raises FjordError on any other top-level command (``flush ruleset``, ``include``, …):
    such a file could change what is not fjord's."""
    if re.search(r"\binclude\b", _code(text)):
        raise FjordError("nft text may not include other files")
    out: list[tuple[str, str]] = []
    for statement in _top_level(text):
        m = _TOP.fullmatch(statement)
        if m is None:
            raise FjordError(f"only whole tables may be loaded, not {statement!r}")
        out.append((m["family"], m["name"]))
    return out


def ensure_fjords(text: str) -> list[tuple[str, str]]:
    """Refuse text that touches a table not named fjord…; the tables it touches."""
    tables = touched_tables(text)
    for fam, name in tables:
        if fam not in FAMILIES or not name.startswith("fjord"):
            raise FjordError(f"refusing to load table {fam} {name}: fjord only replaces its "
                             "own tables (named fjord…)")
    if not tables:
        raise FjordError("no table in the nft text to load")
    return tables


# --- the driver -------------------------------------------------------------------------------


class NotInstalled(StateUnreadable):
    """nft is not there (the nftables package not installed yet): no table is loaded."""


@dataclass
class Nft:
    """Runs nft. ``prefix`` runs it elsewhere, e.g. ``("ip", "netns", "exec", NS)``.

    What it reads (a table's listing, the ruleset's JSON) is kept until :meth:`forget`:
    the resources of one plan that look at the firewall share one ``nft`` per read,
    and apply's reads before its first change are the plan's (fjord.engine.apply drops
    every driver's cache after a change). A change through the driver (load, delete)
    forgets by itself."""

    prefix: Sequence[str] = ()
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict, init=False, repr=False,
                                               compare=False)

    def forget(self) -> None:
        self._cache.clear()

    def _run(self, args: Sequence[str], *, input: str | None = None,
             check: bool = True, hint: str | None = None,
             unshared: bool = False) -> runner.Result:
        program = ["unshare", "--net"] if unshared else [NFT]
        return runner.run([*self.prefix, *program, *args], input=input, check=check,
                          timeout=TIMEOUT, hint=hint)

    def _read(self, args: Sequence[str]) -> runner.Result:
        """Run a read-only command; a missing nft makes the state unreadable, not an error
        (plan on a host where the nftables package is not installed yet)."""
        try:
            return self._run(args, check=False)
        except FjordError as exc:
            if exc.message.startswith("program not found"):
                raise NotInstalled("nft is not installed",
                                   hint="apt-get install nftables") from exc
            raise

    def check(self, text: str) -> None:
        """``nft -c``: parse and check against the kernel without changing anything."""
        ensure_fjords(text)
        self._run(["-c", "-f", "-"], input=text,
                  hint="fjord generated a ruleset the kernel refuses: please report it")

    def load(self, text: str) -> None:
        """Check, then load atomically (one transaction: all of it or nothing)."""
        self.check(text)
        self.load_checked(text)

    def load_checked(self, text: str) -> None:
        """Load text that :meth:`check` accepted a moment ago (the switchover checks
        before it starts moving the uplink, and loads in the middle of it)."""
        ensure_fjords(text)
        try:
            self._run(["-f", "-"], input=text)
        finally:
            self.forget()

    def list_table(self, fam: str, name: str) -> str | None:
        """The table as nft lists it without counters (stable across loads); None if absent."""
        key = ("table", family(fam), ident(name))
        if key not in self._cache:
            result = self._read(["-s", "list", "table", family(fam), ident(name)])
            if result.ok:
                self._cache[key] = result.stdout
            elif "No such file or directory" in result.stderr:
                self._cache[key] = None
            else:
                raise _unreadable(result)
        listing: str | None = self._cache[key]
        return listing

    def declared_listing(self, text: str, fam: str, name: str) -> str:
        """Table ``fam name`` of the ruleset ``text`` as ``list_table`` would list it once
        loaded, without loading it here: nft loads and lists it in a network namespace
        of its own, thrown away after (fjord.net.nft_listing; needs root)."""
        import sys

        result = self._run(["--", sys.executable, "-m", "fjord.net.nft_listing", fam, name],
                           input=text, unshared=True)
        return result.stdout

    def ruleset(self) -> dict[str, Any]:
        """``nft -j list ruleset``, parsed (the same dict until :meth:`forget`: read it,
        do not change it)."""
        key = ("ruleset",)
        if key not in self._cache:
            result = self._read(["-j", "list", "ruleset"])
            if not result.ok:
                raise _unreadable(result)
            try:
                data = json.loads(result.stdout or "{}")
            except ValueError as exc:
                raise FjordError(f"nft printed JSON fjord cannot read: {exc}") from exc
            self._cache[key] = data if isinstance(data, dict) else {}
        ruleset: dict[str, Any] = self._cache[key]
        return ruleset

    def delete_table(self, fam: str, name: str) -> bool:
        """Remove one of fjord's tables; False when it was not there."""
        if not name.startswith("fjord"):
            raise FjordError(f"refusing to delete table {fam} {name}: not fjord's")
        self.forget()
        if self.list_table(fam, name) is None:
            return False
        try:
            self._run(["delete", "table", family(fam), ident(name)])
        finally:
            self.forget()
        return True


def has_table(data: Mapping[str, Any], fam: str, name: str) -> bool:
    """Whether the ruleset of ``nft -j list ruleset`` (``data``) has table ``fam name``."""
    items = data.get("nftables")
    return any(isinstance(item, dict) and isinstance(table := item.get("table"), dict)
               and (table.get("family"), table.get("name")) == (fam, name)
               for item in (items if isinstance(items, list) else ()))


# The run's nft (fjord.engine.context): the firewall and the uplink's guard share its reads.
DRIVER: DriverKey[Nft] = DriverKey("nft", lambda _env: Nft())


def _unreadable(result: runner.Result) -> FjordError:
    stderr = result.stderr.strip()
    if "Operation not permitted" in stderr or "Permission denied" in stderr:
        return StateUnreadable("nft cannot read the ruleset (needs root)",
                               hint="run as root to see the live firewall")
    return StateUnreadable(f"{runner.format_argv(result.argv)}: {stderr or 'failed'}")


def load_table(text: str, nft: Nft | None = None) -> None:
    """Load a ruleset of fjord's own tables atomically, after ``nft -c``.

    For callers outside the engine (the network switchover's uplink guard)."""
    (nft or Nft()).load(text)
