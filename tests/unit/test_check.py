"""`fjord check` never aborts: each probe has its own timeout and its whole process tree
is killed after it; a probe that does not answer, a missing program or an unexpected
error becomes one ✗ line; `--json` always prints the full list; check and status say
the same about a container's cgroups.

The probes run real, harmless programs (sh, sleep) where the process handling is what
is tested; above them, the probes are faked to test the logic of the checks."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from told import tell

from fjord import check as chk
from fjord import probes
from fjord.check import CheckResult, Probe, collect, guard, probe
from fjord.config.desired import Desired, load
from fjord.containers import checks as cchecks
from fjord.containers import limits
from fjord.containers.libvirt import DomainState
from fjord.errors import CommandError, FjordError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab.yaml"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent, this test, has not reaped it)
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- probe: timeouts, the process tree, cgroups --------------------------------------------


def test_probe_answers(tmp_path: Path):
    out = probe(["sh", "-c", "echo one; echo two; echo err >&2; exit 3"], timeout=5)
    assert (out.returncode, out.ok, out.failure, out.timed_out) == (3, False, None, False)
    assert out.last_line() == "two" and out.stderr == "err\n"
    assert probe(["true"], timeout=5).ok


def test_probe_timeout_kills_the_whole_tree(tmp_path: Path):
    """A hung probe with children (one of them in a session of its own, out of the
    process group) is stopped at its timeout, with everything it started."""
    pids = tmp_path / "pids"
    script = (f"sleep 300 & echo $! >> {pids}; setsid sleep 301 & echo $! >> {pids}; "
              "sleep 302")
    start = time.monotonic()
    out = probe(["sh", "-c", script], timeout=1)
    took = time.monotonic() - start
    assert out.timed_out and not out.ok and out.returncode is None
    assert out.failure is not None and out.failure.startswith("no answer after 1 s")
    assert took < 1 + chk.REAP_TIMEOUT + 1
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    deadline = time.monotonic() + 2
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in started)


def test_probe_leaves_no_background_job_after_a_normal_exit(tmp_path: Path):
    pid = tmp_path / "pid"
    out = probe(["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pid}; echo done"],
                timeout=5)
    assert out.ok and out.last_line() == "done"
    deadline = time.monotonic() + 2
    while alive(int(pid.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pid.read_text()))


def test_probe_of_a_missing_program_is_a_failure_not_an_exception():
    out = probe(["fjord-no-such-program"], timeout=5)
    assert not out.ok and out.failure == "program not found: fjord-no-such-program"


def test_probe_joins_the_given_cgroups_before_it_runs(tmp_path: Path):
    """Writing 0 to cgroup.procs moves the writer: the child writes it between fork and
    exec. A plain file stands in for cgroup.procs here."""
    procs = [tmp_path / "memory.procs", tmp_path / "pids.procs"]
    for p in procs:
        p.write_text("")
    assert probe(["true"], timeout=5, cgroups=procs).ok
    assert [p.read_text() for p in procs] == ["0", "0"]
    out = probe(["true"], timeout=5, cgroups=[tmp_path / "gone" / "cgroup.procs"])
    assert not out.ok and out.failure is not None
    assert out.failure.startswith("cannot join the container's cgroups")


# -- guard and collect: one failure is one line -----------------------------------------


def test_guard_turns_errors_into_one_failed_line():
    assert guard("a", lambda: (True, "fine")) == CheckResult("a", True, "fine")

    def fjord_error() -> tuple[bool, str]:
        raise CommandError(["nft", "list"], None, "no answer after 10 s", hint="look at nft")

    r = guard("b", fjord_error)
    assert not r.ok
    assert r.detail == ("command timed out: nft list; no answer after 10 s (look at nft)")

    def bug() -> tuple[bool, str]:
        raise KeyError("eth0")

    r = guard("c", bug)
    assert not r.ok and r.detail.startswith("the check itself failed: KeyError: 'eth0'")


def test_collect_ends_a_group_with_one_line():
    def group() -> Iterator[CheckResult]:
        yield CheckResult("x: one", True, "ok")
        raise RuntimeError("boom")

    results = list(collect("x", group()))
    assert results[0].ok and results[1].name == "x: remaining checks"
    assert not results[1].ok and "RuntimeError: boom" in results[1].detail


# -- the checks above the probes ----------------------------------------------------------


class FakeLibvirt:
    def __init__(self, running: dict[str, bool] | None = None, broken: bool = False) -> None:
        self.running = running or {}
        self.broken = broken

    def domain(self, name: str) -> DomainState | None:
        if self.broken:
            raise FjordError("cannot connect to libvirt (lxc:///): Failed to connect socket")
        if name not in self.running:
            return None
        return DomainState(name, "u", self.running[name], True, "<domain/>")

    def memory_usage(self, name: str) -> int:
        return 30 << 20

    def close(self) -> None:
        pass


def answered(argv: list[str], rc: int = 0, out: str = "") -> Probe:
    return Probe(argv, rc, out, "", 0.01)


def hung(argv: list[str], timeout: float) -> Probe:
    return Probe(argv, None, "", "", timeout, f"no answer after {timeout:g} s (stopped: "
                 f"{' '.join(argv)})", True)


class FakeInside:
    """A container whose probes answer from a table; ``hang`` names the programs that
    do not answer (the probe's timeout is reached)."""

    hang: set[str] = set()
    raises: set[str] = set()
    seen: list[list[str]] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = 4242

    def run(self, argv: list[str], timeout: float = chk.PROBE_TIMEOUT) -> Probe:
        FakeInside.seen.append(argv)
        if argv[0] in self.raises:
            raise OSError(24, "Too many open files")
        if argv[0] in self.hang:
            return hung(argv, timeout)
        if argv[0] == "getent":
            return answered(argv, out="198.51.100.10   far.example.org\n")
        if argv[0] == "systemctl":
            return answered(argv, out="running\n")
        return answered(argv, out="2 packets transmitted, 2 received, 0% packet loss\n")


@pytest.fixture
def desired() -> Desired:
    return load(str(EXAMPLE))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Everything below the checks faked: host probes answer, libvirt says test runs,
    the container's probes answer (FakeInside), its cgroups are fine."""
    state: dict[str, Any] = {"libvirt": FakeLibvirt({"test": True}), "host_hang": set(),
                             "links": [{"ifname": "lo", "address": "00:00:00:00:00:00"}]}
    example = load(str(EXAMPLE))
    for name, mac in cchecks.declared_macs(example, example.containers[0]).items():
        state["links"].append({"ifname": name, "address": mac})
    FakeInside.hang, FakeInside.raises, FakeInside.seen = set(), set(), []

    def host_probe(argv: list[str], *, timeout: float = chk.PROBE_TIMEOUT,
                   **_: Any) -> Probe:
        if argv[0] in state["host_hang"]:
            return hung(argv, timeout)
        if argv[0] == "ping":
            return answered(argv, out="2 packets transmitted, 2 received\n")
        if argv[0] == "nsenter" and argv[3:5] == ["ip", "-json"]:
            return answered(argv, out=json.dumps(state["links"]))
        return answered(argv)

    def declared(desired: Desired) -> Iterator[CheckResult]:
        yield CheckResult("host: network as declared", True, "as in the file")

    monkeypatch.setattr(chk, "probe", host_probe)
    monkeypatch.setattr(probes, "probe", host_probe)  # ping's
    monkeypatch.setattr(cchecks, "probe", host_probe)
    monkeypatch.setattr(chk, "_declared", declared)
    monkeypatch.setattr(chk, "_forwarding", lambda d: (True, "on"))
    monkeypatch.setattr(cchecks, "Libvirt", lambda: state["libvirt"])
    monkeypatch.setattr(cchecks, "Inside", FakeInside)
    monkeypatch.setattr(limits, "verdicts", lambda name, expected=None: [
        ("memory limit enforced", True, "all 5 processes in /x: limit 512 MiB"),
        ("sees only its own cgroups", True, "own cgroup namespace, rooted at /x")])
    monkeypatch.setattr(cchecks, "_connect", lambda *a: (True, "reached"))
    return state


NAMES = [
    "host: IPv4 gateway answers", "host: IPv6 gateway answers", "host: forwarding enabled",
    "host: firewall loaded", "host: network as declared",
    "container test: systemd running", "container test: memory limit enforced",
    "container test: sees only its own cgroups", "container test: its root's files can be read",
    "container test: its links have their declared MACs",
    "container test: answers ping on 10.1.0.2",
    "container test: reaches 198.51.100.10 over IPv4 (NAT)",
    "container test: reaches 2001:db8:ffff::10 over IPv6",
    "container test: resolves far.example.org", "forward tcp/2222 -> test:22",
]


def test_all_pass(desired: Desired, fake: dict[str, Any]):
    results = chk.run_checks(desired)
    assert [r.name for r in results] == NAMES
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    # every probe in the container ran through Inside (its namespaces and cgroups)
    assert ["getent", "hosts", "far.example.org"] in FakeInside.seen


def test_a_link_with_another_mac_is_named_with_its_cure(desired, fake):
    """udev gave eth0 a MAC of its own (Debian 12, racing libvirt): the port's flows drop
    all the container sends. check names the link, both MACs and what to do."""
    declared = fake["links"][1]["address"]
    fake["links"][1]["address"] = "f6:25:37:a9:48:55"
    results = {r.name: r for r in chk.run_checks(desired)}
    macs = results["container test: its links have their declared MACs"]
    assert not macs.ok
    assert "eth0 has f6:25:37:a9:48:55" in macs.detail and declared in macs.detail
    assert "fjord container restart test" in macs.detail
    fake["links"].pop(1)
    results = {r.name: r for r in chk.run_checks(desired)}
    assert "no eth0" in results["container test: its links have their declared MACs"].detail


def test_a_hung_name_lookup_is_one_failed_line_and_the_rest_goes_on(desired, fake):
    """Issue 13: `getent hosts` timed out and the whole check ended with an error."""
    FakeInside.hang = {"getent"}
    results = chk.run_checks(desired)
    assert [r.name for r in results] == NAMES
    (bad,) = [r for r in results if not r.ok]
    assert bad.name == "container test: resolves far.example.org"
    assert bad.detail.startswith("no answer for far.example.org after 15 s: its name "
                                 "servers do not answer; look at its /etc/resolv.conf")


def test_hung_probes_everywhere_still_give_every_line(desired, fake):
    FakeInside.hang = {"getent", "ping", "systemctl"}
    fake["host_hang"] = {"ping", "nft"}
    results = chk.run_checks(desired)
    assert [r.name for r in results] == NAMES
    failed = {r.name: r.detail for r in results if not r.ok}
    assert failed["host: IPv4 gateway answers"].startswith("no answer after 10 s")
    assert failed["host: firewall loaded"].startswith("cannot list the ruleset: no answer")
    assert failed["container test: systemd running"].startswith(
        "systemd has not finished starting after 60 s; failed units: cannot list them")
    assert "reaches 198.51.100.10" in " ".join(failed)


def test_an_unexpected_error_in_one_probe_is_one_failed_line(desired, fake):
    FakeInside.raises = {"getent"}
    results = chk.run_checks(desired)
    assert [r.name for r in results] == NAMES
    (bad,) = [r for r in results if not r.ok]
    assert bad.name == "container test: resolves far.example.org"
    assert bad.detail.startswith("the check itself failed: OSError: [Errno 24] Too many open")


def test_an_error_in_a_check_group_does_not_end_the_others(desired, fake, monkeypatch):
    def broken(desired: Desired) -> Iterator[CheckResult]:
        raise RuntimeError("no config for containers")
        yield  # pragma: no cover

    monkeypatch.setattr(chk, "container_checks", broken)
    results = chk.run_checks(desired)
    names = [r.name for r in results]
    assert names[:5] == NAMES[:5] and names[5] == "containers: remaining checks"
    assert not results[5].ok and "no config for containers" in results[5].detail


def test_libvirt_down_and_a_stopped_container(desired, fake):
    fake["libvirt"] = FakeLibvirt(broken=True)
    results = chk.run_checks(desired)
    running = [r for r in results if r.name == "container test: running"]
    assert len(running) == 1 and "is libvirtd running?" in running[0].detail
    assert results[-1].name == "forward tcp/2222 -> test:22"  # still tried
    fake["libvirt"] = FakeLibvirt({"test": False})
    (r,) = [r for r in chk.run_checks(desired) if r.name.startswith("container test")]
    assert r.detail == "not running: run `fjord apply` or `fjord container start test`"


def test_a_container_that_cannot_be_entered(desired, fake, monkeypatch):
    def gone(name: str) -> FakeInside:
        raise FjordError(f"container {name} is not running", hint="start it")

    monkeypatch.setattr(cchecks, "Inside", gone)
    (r,) = [r for r in chk.run_checks(desired) if r.name.startswith("container test")]
    assert not r.ok and "cannot be entered: container test is not running" in r.detail


def test_cli_json_prints_every_line_and_exits_non_zero(desired, fake, monkeypatch, tmp_path):
    from fjord.cli import cli

    FakeInside.hang = {"getent"}
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    out = CliRunner().invoke(cli, ["check", "-c", str(EXAMPLE), "--json"])
    assert out.exit_code == 1, out.output
    checks = json.loads(out.stdout)["checks"]
    assert [c["name"] for c in checks] == NAMES
    assert [c["ok"] for c in checks].count(False) == 1
    FakeInside.hang = set()
    out = CliRunner().invoke(cli, ["check", "-c", str(EXAMPLE)])
    assert out.exit_code == 0 and "15 passed, 0 failed" in out.stdout


# -- check and status say the same about a container's cgroups ---------------------------


def test_check_and_status_give_the_same_cgroup_lines(desired, fake, monkeypatch):
    from fjord import status

    why = ("no cgroup namespace: it sees the host's whole cgroup tree; fjord-init did not "
           "run (see docs/containers.md: limits and cgroups)")
    lines = [("memory limit enforced", True, "all 5 processes in /x: limit 512 MiB"),
             ("sees only its own cgroups", False, why)]
    monkeypatch.setattr(limits, "verdicts", lambda name, expected=None: lines)
    monkeypatch.setattr("fjord.containers.libvirt.Libvirt", lambda: fake["libvirt"])
    from_check = {r.name.removeprefix("container test: "): (r.ok, r.detail)
                  for r in chk.run_checks(desired)}
    (item,) = status._containers(desired)
    from_status = {c["check"]: (c["ok"], c["detail"]) for c in item["cgroups"]}
    assert from_status == {what: from_check[what] for what in from_status}
    assert from_status["sees only its own cgroups"] == (False, why)
    assert item["limits_enforced"] == {"ok": True, "detail": lines[0][2]}
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    status.render({"host": {"fqdn": "oslo", "converged": True, "ipv4": "a", "ipv6": None,
                            "private": "p"}, "in_order": [], "drift": [], "unreadable": [],
                   "containers": [item]}, Console(file=buf, width=400))
    text = buf.getvalue()
    assert "✗ sees only its own cgroups  no cgroup namespace" in text
    assert "✓ memory limit enforced" in text
