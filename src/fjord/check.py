"""`fjord check`: the connectivity a server owner checks by hand, as a command.

Each check says what it proved or what to look at. Host checks cover the gateways,
forwarding, the firewall and the declared network state; container checks (running,
ping, ssh, the outside over IPv4 and IPv6, DNS) and port forwards are added by the
containers layer.

A check never aborts the others: every probe (a program fjord runs to find out) has
its own timeout, after which its whole process tree is killed (:mod:`fjord.probes`); a
probe that does not answer, a program that is missing, or an unexpected error in one
check becomes one ✗ line that says so, and :func:`run_checks` always returns the full
list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fjord.config.desired import Desired, with_kept
from fjord.containers.checks import container_checks, targets
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context
from fjord.host.sysctl import OPTIONAL, Sysctl, wanted
from fjord.net.firewall import FORWARD, INPUT, Persisted
from fjord.probes import (
    PING_TIMEOUT,
    PROBE_TIMEOUT,
    REAP_TIMEOUT,
    CheckResult,
    Probe,
    collect,
    guard,
    kill_tree,
    one_line,
    ping,
    probe,
)
from fjord.resources import network_resources

__all__ = ["PING_TIMEOUT", "PROBE_TIMEOUT", "REAP_TIMEOUT", "CheckResult", "Probe",
           "collect", "guard", "host_checks", "kill_tree", "one_line", "ping", "probe",
           "run_checks"]

def host_checks(desired: Desired) -> Iterator[CheckResult]:
    host = desired.host
    ext = host.switch.external

    def gateway(v6: bool) -> tuple[bool, str]:
        gw = host.ipv6.gateway if v6 and host.ipv6 is not None else host.ipv4.gateway
        ok, detail = ping(str(gw), via=ext, v6=v6)
        return ok, detail if ok else (
            f"{detail}; look at {ext}'s IPv6 address and route" if v6 else
            f"{detail}; look at {ext}'s address and the uplink"
            + (f", and the on-link route to the gateway (`ip route show {gw}`)"
               if host.ipv4.onlink_gateway else ""))

    yield guard("host: IPv4 gateway answers", lambda: gateway(False))
    if host.ipv6 is not None:
        yield guard("host: IPv6 gateway answers", lambda: gateway(True))
    yield guard("host: forwarding enabled", lambda: _forwarding(desired))
    yield guard("host: firewall loaded", _firewall)
    if host.firewall is not None:
        yield guard("host: input firewall loaded", _input_firewall)
    yield from _declared(desired)
    yield from _unchecked(desired)


# What a kernel setting fjord checks means, as the report says it when it is as wanted.
SAID = {"net.ipv4.ip_forward": "IPv4 forwarding on",
        "net.ipv4.conf.all.arp_ignore": "ARP answered only where the address is",
        "net.ipv6.conf.all.forwarding": "IPv6 forwarding on",
        "net.ipv6.conf.all.proxy_ndp": "proxy NDP on",
        "net.bridge.bridge-nf-call-iptables": "bridged IPv4 not filtered",
        "net.bridge.bridge-nf-call-ip6tables": "bridged IPv6 not filtered",
        "net.bridge.bridge-nf-call-arptables": "bridged ARP not filtered"}


def _forwarding(desired: Desired) -> tuple[bool, str]:
    """The kernel settings the host needs (host/sysctl.py's list for this host: no IPv6
    setting on an IPv4-only host), and only those, said as checked."""
    bad, good = [], []
    for key, value, _ in wanted(desired):
        actual = Sysctl(key, value, "").read()
        if actual is None and key.startswith(OPTIONAL):
            continue  # br_netfilter not loaded: nothing to turn off
        if actual != value:
            bad.append(f"{key} is {actual} (want {value})")
        else:
            good.append(SAID.get(key, f"{key} = {value}"))
    return not bad, "; ".join(bad) or ", ".join(good)


def _unchecked(desired: Desired) -> Iterator[CheckResult]:
    """A ✗ for each way out the containers' checks cannot try, and why: they ping the
    outside over IPv4 (and IPv6) only when there is an address to ping (host.check, else
    the first DNS server of that family); silence would read as "tested and fine"."""
    if not desired.containers:
        return
    v4, v6, _ = targets(desired)
    if v4 is None:
        yield CheckResult(
            "containers: reach the outside over IPv4 (NAT)", False,
            "not checked: host.dns has no IPv4 server and host.check.ipv4 is not set; set "
            "host.check.ipv4 to an IPv4 address outside that answers ping")
    if desired.host.ipv6 is not None and v6 is None and any(
            c.ipv6 is not None for c in desired.containers):
        yield CheckResult(
            "containers: reach the outside over IPv6", False,
            "not checked: host.dns has no IPv6 server and host.check.ipv6 is not set; set "
            "host.check.ipv6 to an IPv6 address outside that answers ping")


def _firewall() -> tuple[bool, str]:
    return _loaded(FORWARD)


def _input_firewall() -> tuple[bool, str]:
    return _loaded(INPUT)


def _loaded(table: Persisted) -> tuple[bool, str]:
    """Whether the table is there (whether it is as declared: "network as declared")."""
    out = probe(["nft", "list", "table", table.family, table.name], timeout=10)
    if out.ok:
        return True, f"table {table.spec} is loaded"
    if out.failure is not None:
        return False, f"cannot list the ruleset: {out.failure}"
    return False, f"table {table.spec} is missing: run `fjord apply`"


def _declared(desired: Desired) -> Iterator[CheckResult]:
    name = "host: network as declared"
    warnings: list[str] = []

    def declared() -> tuple[bool, str]:
        ctx = Context(desired)
        try:
            # as apply sees it: containers left out of the file keep their network
            # until they are pruned
            plan = make_plan(network_resources(with_kept(desired)), ctx)
        finally:
            ctx.close()
        warnings.extend(plan.warnings)
        drift = [f"{c.resource}: {c.detail}" for c in plan.changes]
        drift += [f"{u.resource}: cannot read ({u.reason})" for u in plan.unreadable]
        return not drift, "; ".join(drift) or ("bridges, ports, addresses, routes, proxy "
                                               "NDP and firewalls as in the file")

    yield guard(name, declared)
    for warning in warnings:
        yield CheckResult("host: no foreign firewall in the way", False, warning)


# Further checks register here (containers, port forwards): each yields CheckResults.
EXTRA_CHECKS: list[Callable[[Desired], Iterator[CheckResult]]] = []


def run_checks(desired: Desired) -> list[CheckResult]:
    """Every check, in order; never raises for one check's sake (see the module)."""
    groups: list[tuple[str, Callable[[Desired], Iterable[CheckResult]]]] = [
        ("host", host_checks), ("containers", container_checks),
        *((getattr(extra, "__name__", "extra"), extra) for extra in EXTRA_CHECKS)]
    results: list[CheckResult] = []
    for label, group in groups:
        results.extend(collect(label, _lazy(group, desired)))
    return results


def _lazy(group: Callable[[Desired], Iterable[CheckResult]],
          desired: Desired) -> Iterator[CheckResult]:
    """The group's results, its call included in what :func:`collect` guards."""
    yield from group(desired)
