"""The host's own input firewall (``host.firewall``): one nftables table, ``inet fjord-input``.

One base chain on hook input. Loopback, replies (established, related), ICMP and
ICMPv6 (neighbour discovery, path MTU, the pings of `fjord check`), SSH on
``host.ssh_port`` and the declared TCP and UDP ports are accepted; anything else new
is counted and dropped by the chain's last rule. The chain's policy is accept: a
flushed chain (``nft flush chain``) lets everything in rather than locking the owner
out; while the table is there the drop is the same, since a packet another table
accepts still meets this chain's drop.

Containers and port forwards never reach this chain (they are forwarded, not
delivered to the host): the table inet fjord filters them.

Like that table, it is loaded atomically, persisted (/etc/fjord/input.nft) and loaded
at boot by the same if-pre-up.d hook (fjord.net.firewall), and reloaded when someone
else changed it. Without ``host.firewall`` the table is deleted and the file removed.

Before it loads the table, the plan refuses when sshd listens on a TCP port the table
would drop (``ss -Htlnp``): the owner would be locked out at their next login.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fjord import runner
from fjord.config.desired import Desired
from fjord.engine.context import DriverKey
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.host.packages import Packages
from fjord.net import nft
from fjord.net.firewall import BOOT_HOOK, INPUT, LiveTable
from fjord.net.nft import BaseChain, Nft, Rule, Table

HEADER = (
    "Managed by fjord: `fjord apply` rewrites this file; edit host.firewall in fjord.yaml.",
    f"Loaded at boot by {BOOT_HOOK} before the interfaces come up.",
    f"The live table: nft list table {INPUT.spec}",
)

# The programs whose listening ports the table must not drop.
SSH_DAEMONS = ("sshd",)


# --- the ruleset, from the desired state -----------------------------------------------------


@dataclass(frozen=True)
class InputRuleset:
    """What the host accepts; ``render()`` is the file fjord loads."""

    ssh_port: int
    tcp: tuple[int, ...] = ()  # without the SSH port, sorted, each once
    udp: tuple[int, ...] = ()

    @classmethod
    def from_desired(cls, desired: Desired) -> InputRuleset | None:
        """The declared ruleset; None without ``host.firewall``."""
        host = desired.host
        if host.firewall is None:
            return None
        return cls(host.ssh_port, tuple(sorted(set(host.firewall.tcp) - {host.ssh_port})),
                   tuple(sorted(set(host.firewall.udp))))

    def open_tcp(self) -> frozenset[int]:
        return frozenset((self.ssh_port, *self.tcp))

    def summary(self) -> str:
        parts = [f"SSH on tcp/{self.ssh_port}"]
        for proto, ports in (("tcp", self.tcp), ("udp", self.udp)):
            if ports:
                parts.append(f"{proto} {', '.join(map(str, ports))}")
        return ", ".join(parts) + " open; other new connections dropped"

    def table(self) -> Table:
        return Table(INPUT.family, INPUT.name, (input_chain(self),),
                     why=f"managed by fjord: {INPUT.file}", header=HEADER)

    def render(self) -> str:
        return self.table().render()

    def digest(self) -> str:
        return hashlib.sha256(self.render().encode()).hexdigest()


def _ports(ports: Iterable[int]) -> str:
    return nft.anonymous_set(nft.port(p) for p in ports)


def input_chain(rs: InputRuleset) -> BaseChain:
    rules = [
        Rule(("iifname", nft.ifname("lo"), "accept"), "loopback"),
        Rule(("ct", "state", "established,related", "accept"), "replies"),
        Rule(("ct", "state", "invalid", "drop"), "not part of any connection"),
        Rule(("meta", "l4proto", "icmp", "accept"), "ICMP: ping, errors"),
        Rule(("meta", "l4proto", "ipv6-icmp", "accept"),
             "ICMPv6: neighbour discovery, path MTU, ping"),
        Rule(("tcp", "dport", nft.port(rs.ssh_port), "accept"), "SSH (host.ssh_port)"),
    ]
    if rs.tcp:
        rules.append(Rule(("tcp", "dport", _ports(rs.tcp), "accept"), "host.firewall.tcp"))
    if rs.udp:
        rules.append(Rule(("udp", "dport", _ports(rs.udp), "accept"), "host.firewall.udp"))
    rules.append(Rule(("counter", "drop"), "anything else new to the host"))
    # policy accept and a last rule that drops: see the module's docstring
    return BaseChain("input", "filter", "input", "filter", policy="accept", rules=tuple(rules))


# --- the listening sockets -------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: its local address and port, and the programs holding it."""

    address: str
    port: int
    programs: tuple[str, ...]

    @property
    def loopback(self) -> bool:
        """Reached through lo only, which the table accepts."""
        host = self.address.strip("[]")
        return (host.startswith("127.") or host == "::1" or host.endswith("%lo")
                or host.startswith("::ffff:127."))


_PROGRAM = re.compile(r'\("([^"]*)",pid=')


def parse_listeners(text: str) -> list[Listener]:
    """``ss -Htlnp``'s lines: ``LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=…))``."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        address, sep, port = fields[3].rpartition(":")
        if not sep or not port.isdigit():
            continue
        out.append(Listener(address, int(port), tuple(_PROGRAM.findall(" ".join(fields[5:])))))
    return out


class Sockets:
    """Reads the listening TCP sockets of the host (its network namespace)."""

    def listeners(self) -> list[Listener]:
        try:
            result = runner.run(["ss", "-Htlnp"], timeout=10, check=False)
        except FjordError as exc:
            raise StateUnreadable(f"cannot list the listening sockets: {exc.message}",
                                  hint="apt-get install iproute2") from exc
        if not result.ok:
            raise StateUnreadable(f"ss -Htlnp: {result.stderr.strip() or 'failed'}")
        return parse_listeners(result.stdout)


SOCKETS: DriverKey[Sockets] = DriverKey("sockets", lambda _env: Sockets())


def locked_out(listeners: Sequence[Listener], rs: InputRuleset) -> list[int]:
    """The TCP ports an SSH daemon listens on (beyond loopback) that the table drops."""
    return sorted({s.port for s in listeners
                   if set(s.programs) & set(SSH_DAEMONS) and not s.loopback
                   and s.port not in rs.open_tcp()})


# --- the live table --------------------------------------------------------------------------


class InputFirewall(LiveTable):
    """The live ``table inet fjord-input`` (``host.firewall``), or its removal."""

    kind = "input-firewall"

    def __init__(self, ruleset: InputRuleset | None) -> None:
        super().__init__(INPUT, ruleset, after=(Packages,))  # nft: the nftables package
        self.declared = ruleset

    def inspect(self, ctx: Context, driver: Nft, loading: bool) -> None:
        if self.declared is None:
            return
        ports = locked_out(ctx.open(SOCKETS).listeners(), self.declared)
        if not ports:
            return
        listed = ", ".join(f"tcp/{p}" for p in ports)
        fix = (f"add {', '.join(map(str, ports))} to host.firewall.tcp, or set host.ssh_port "
               f"to the port sshd listens on")
        if loading:
            raise FjordError(
                f"host.firewall would drop {listed}, where sshd listens: loading it could "
                f"lock you out of the host. Nothing was changed", hint=fix)
        ctx.warn(f"sshd listens on {listed}, which table {INPUT.spec} drops: {fix}")


def resources(desired: Desired) -> list[Resource]:
    """The live table, then its persisted copy (written after the live load, as the
    firewall's: a ruleset the kernel refuses never reaches the file the boot loads), or
    without ``host.firewall`` the table's removal and the file's."""
    ruleset = InputRuleset.from_desired(desired)
    live = InputFirewall(ruleset)
    if ruleset is None:
        return [live, File(INPUT.file, None, ensure="absent", after=(live,))]
    return [live, File(INPUT.file, ruleset.render(), mode=0o644, after=(live,),
                       reason="the host input firewall loaded at boot")]
