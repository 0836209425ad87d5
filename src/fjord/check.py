"""`fjord check`: the connectivity a server owner checks by hand, as a command.

Each check says what it proved or what to look at. Host checks cover the gateways,
forwarding, the firewall and the declared network state; container checks (running,
ping, ssh, the outside over IPv4 and IPv6, DNS) and port forwards are added by the
containers layer.

A check never aborts the others: every probe (a program fjord runs to find out) has
its own timeout, after which its whole process tree is killed (:func:`probe`); a probe
that does not answer, a program that is missing, or an unexpected error in one check
becomes one ✗ line that says so (:func:`guard`), and :func:`run_checks` always returns
the full list.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from fjord.config.desired import Desired
from fjord.errors import FjordError
from fjord.runner import format_argv, prepare

log = logging.getLogger("fjord.check")

# How long a probe may take before it is killed, and the check is ✗.
PING_TIMEOUT = 10.0
PROBE_TIMEOUT = 15.0
# After a kill, how long to wait for the pipes to close.
REAP_TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- probes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a probe did. ``failure`` is set when it gave no answer of its own: it timed
    out (``timed_out``), the program is missing, or it could not be started."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    failure: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.returncode == 0

    def last_line(self) -> str:
        """The last line it printed (stdout first), or why it said nothing."""
        if self.failure is not None:
            return self.failure
        text = (self.stdout.strip() or self.stderr.strip()).splitlines()
        return text[-1].strip() if text else f"exit status {self.returncode}"


def _descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every process below ``pid`` (children of each of its threads, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list((proc / str(parent) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in out:
                    out.append(child)
                    todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group and every process below it (nsenter's child in a
    container's PID namespace, a shell's pipeline, what left the group)."""
    below = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in [proc.pid, *below]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _joiner(procs: Sequence[Path]) -> tuple[list[int], Callable[[], None] | None]:
    """Open the ``cgroup.procs`` files here; the returned function, run in the child
    between fork and exec, writes 0 (this process) to each: the probe is in the
    container's cgroups before it runs anything, children included."""
    fds = []
    try:
        for path in procs:
            fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise

    def join() -> None:
        for fd in fds:
            os.write(fd, b"0")

    return fds, (join if fds else None)


def probe(argv: Sequence[str], *, timeout: float = PROBE_TIMEOUT,
          env: dict[str, str] | None = None, cgroups: Sequence[Path] = ()) -> Probe:
    """Run ``argv`` for a check: in a session of its own, in ``cgroups`` (the
    ``cgroup.procs`` files of a container's cgroups) from its first instruction on,
    and never longer than ``timeout`` seconds: then its whole process tree is killed.
    Never raises for the program's sake; see :class:`Probe`."""
    args, full_env = prepare(argv, env)
    start = time.monotonic()

    def failed(why: str, timed_out: bool = False, out: str = "", err: str = "") -> Probe:
        log.debug("  -> %s", why)
        return Probe(args, None, out, err, time.monotonic() - start, why, timed_out)

    try:
        fds, join = _joiner(cgroups)
    except OSError as exc:
        return failed(f"cannot join the container's cgroups ({exc.filename}: "
                      f"{exc.strerror})")
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", env=full_env, start_new_session=True,
            preexec_fn=join)
    except FileNotFoundError:
        return failed(f"program not found: {args[0]}")
    except (OSError, subprocess.SubprocessError) as exc:
        return failed(f"cannot start {args[0]}: {exc}")
    finally:
        for fd in fds:
            os.close(fd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        try:
            out, err = proc.communicate(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # something still holds its pipes
            kill_tree(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
            out, err = "", ""
        return failed(f"no answer after {timeout:g} s (stopped: {format_argv(args)})",
                      True, out or "", err or "")
    except BaseException:
        kill_tree(proc)
        proc.wait()
        raise
    # what it left behind in its process group (a shell's background job) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - start
    log.debug("  -> %d in %.3f s", proc.returncode, seconds)
    return Probe(args, proc.returncode, out, err, seconds)


# -- checks ------------------------------------------------------------------------------


def one_line(exc: FjordError) -> str:
    """An error's message and hint as one line of a report."""
    text = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
    return f"{text} ({exc.hint})" if exc.hint else text


def guard(name: str, check: Callable[[], tuple[bool, str]]) -> CheckResult:
    """One check as one result: what ``check`` returns (ok, detail), or ✗ with what went
    wrong when it raised (fjord's errors say what to do; anything else is a bug in the
    check, said as such, and the other checks go on)."""
    try:
        ok, detail = check()
    except FjordError as exc:
        return CheckResult(name, False, one_line(exc))
    except Exception as exc:
        log.debug("check %r failed", name, exc_info=True)
        return CheckResult(name, False, f"the check itself failed: {type(exc).__name__}: "
                           f"{exc} (a bug in fjord; --verbose shows where)")
    return CheckResult(name, ok, detail)


def collect(label: str, results: Iterable[CheckResult]) -> Iterator[CheckResult]:
    """The results of a group of checks; an error between them (in the group's own
    code, not in a guarded check) ends the group with one ✗, not the whole check."""
    try:
        yield from results
    except Exception as exc:
        log.debug("checks of %s failed", label, exc_info=True)
        detail = one_line(exc) if isinstance(exc, FjordError) else \
            f"{type(exc).__name__}: {exc} (a bug in fjord; --verbose shows where)"
        yield CheckResult(f"{label}: remaining checks", False,
                          f"not run: the checks stopped on an error: {detail}")


def ping(target: str, *, via: str | None = None, v6: bool = False, count: int = 2,
         prefix: list[str] | None = None, cgroups: Sequence[Path] = (),
         env: dict[str, str] | None = None) -> tuple[bool, str]:
    if v6 and via and ip_address(target).is_link_local:
        target = f"{target}%{via}"
    argv = [*(prefix or []), "ping", *(["-6"] if v6 else ["-4"]), "-n", "-q",
            "-c", str(count), "-i", "0.2", "-W", "2"]
    if via and not target.endswith(f"%{via}"):
        argv += ["-I", via]
    out = probe([*argv, target], timeout=PING_TIMEOUT, cgroups=cgroups, env=env)
    if out.failure is not None:
        return False, out.failure
    last = (out.stdout.strip().splitlines() or [out.stderr.strip() or "no answer"])[-1]
    summary = next((line for line in out.stdout.splitlines() if "transmitted" in line), last)
    return out.ok, summary.strip()


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
    from fjord.host.sysctl import OPTIONAL, Sysctl, wanted

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
    from fjord.containers.checks import _targets

    if not desired.containers:
        return
    v4, v6, _ = _targets(desired)
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
    out = probe(["nft", "list", "table", "inet", "fjord"], timeout=10)
    if out.ok:
        return True, "table inet fjord is loaded"
    if out.failure is not None:
        return False, f"cannot list the ruleset: {out.failure}"
    return False, "table inet fjord is missing: run `fjord apply`"


def _declared(desired: Desired) -> Iterator[CheckResult]:
    name = "host: network as declared"
    warnings: list[str] = []

    def declared() -> tuple[bool, str]:
        from fjord.config.desired import with_kept
        from fjord.engine.plan import make_plan
        from fjord.engine.resource import Context
        from fjord.resources import network_resources

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
                                               "NDP and firewall as in the file")

    yield guard(name, declared)
    for warning in warnings:
        yield CheckResult("host: no foreign firewall in the way", False, warning)


# Further checks register here (containers, port forwards): each yields CheckResults.
EXTRA_CHECKS: list[Callable[[Desired], Iterator[CheckResult]]] = []


def run_checks(desired: Desired) -> list[CheckResult]:
    """Every check, in order; never raises for one check's sake (see the module)."""
    from fjord.containers.checks import container_checks

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
