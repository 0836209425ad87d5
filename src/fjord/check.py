"""`fjord check`: the connectivity a server owner checks by hand, as a command.

Each check says what it proved or what to look at. Host checks cover the gateways,
forwarding, the firewall and the declared network state; container checks (running,
ping, ssh, the outside over IPv4 and IPv6, DNS) and port forwards are added by the
containers layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from ipaddress import ip_address
from typing import Any

from fjord.config.desired import Desired
from fjord.runner import run


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def ping(target: str, *, via: str | None = None, v6: bool = False, count: int = 2,
         prefix: list[str] | None = None) -> tuple[bool, str]:
    if v6 and via and ip_address(target).is_link_local:
        target = f"{target}%{via}"
    argv = [*(prefix or []), "ping", *(["-6"] if v6 else ["-4"]), "-n", "-q",
            "-c", str(count), "-i", "0.2", "-W", "2"]
    if via and not target.endswith(f"%{via}"):
        argv += ["-I", via]
    out = run([*argv, target], check=False, timeout=15)
    last = (out.stdout.strip().splitlines() or ["no answer"])[-1]
    summary = next((line for line in out.stdout.splitlines() if "transmitted" in line), last)
    return out.ok, summary.strip()


def host_checks(desired: Desired) -> Iterator[CheckResult]:
    host = desired.host
    ext = host.switch.external
    ok, detail = ping(str(host.ipv4.gateway), via=ext)
    yield CheckResult("host: IPv4 gateway answers", ok,
                      detail if ok else f"{detail}; look at {ext}'s address and the uplink")
    if host.ipv6 is not None:
        ok, detail = ping(str(host.ipv6.gateway), via=ext, v6=True)
        yield CheckResult("host: IPv6 gateway answers", ok,
                          detail if ok else f"{detail}; look at {ext}'s IPv6 address and route")
    from fjord.host.sysctl import Sysctl, wanted

    bad = []
    for key, value, _ in wanted(desired):
        actual = Sysctl(key, value, "").read()
        if actual != value:
            bad.append(f"{key} is {actual} (want {value})")
    yield CheckResult("host: forwarding enabled", not bad,
                      "; ".join(bad) or "IPv4 and IPv6 forwarding on")
    loaded = run(["nft", "list", "table", "inet", "fjord"], check=False, timeout=10).ok
    yield CheckResult("host: firewall loaded", loaded,
                      "table inet fjord is loaded" if loaded
                      else "table inet fjord is missing: run `fjord apply`")
    yield from _declared(desired)


def _declared(desired: Desired) -> Iterator[CheckResult]:
    from fjord.config.desired import with_kept
    from fjord.engine.plan import make_plan
    from fjord.engine.resource import Context
    from fjord.resources import network_resources

    ctx = Context(desired)
    try:
        # as apply sees it: containers left out of the file keep their network until
        # they are pruned
        plan = make_plan(network_resources(with_kept(desired)), ctx)
    finally:
        ctx.close()
    drift = [f"{c.resource}: {c.detail}" for c in plan.changes]
    drift += [f"{u.resource}: cannot read ({u.reason})" for u in plan.unreadable]
    yield CheckResult("host: network as declared", not drift,
                      "; ".join(drift) or "bridges, ports, addresses, routes, proxy NDP "
                      "and firewall as in the file")
    for warning in plan.warnings:
        yield CheckResult("host: no foreign firewall in the way", False, warning)


# Further checks register here (containers, port forwards): each yields CheckResults.
EXTRA_CHECKS: list[Callable[[Desired], Iterator[CheckResult]]] = []


def run_checks(desired: Desired) -> list[CheckResult]:
    from fjord.containers.checks import container_checks

    results = list(host_checks(desired))
    results.extend(container_checks(desired))
    for extra in EXTRA_CHECKS:
        results.extend(extra(desired))
    return results
