"""Faults during `fjord apply`, each in a lab, each followed by a second apply that must
converge and a `fjord check` that must pass:

- fjord killed with SIGKILL at every change of a fresh apply (a sample in CI, all with
  FJORD_FULL_FAULTS=1), and in the middle of the switchover;
- Open vSwitch's database server, and libvirtd, killed (before an apply, and while an
  apply runs);
- a second apply started while one runs: it refuses, or waits with --wait; never
  interleaves.

Host and network layers (`--only host --only network`); the containers' faults are in
test_reliability_containers.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from faults import (
    EXAMPLE,
    FJORD,
    FULL,
    HOST_AND_NETWORK,
    SEED,
    apply,
    apply_with_fault,
    assert_converged,
    daemon_pid,
    fjord,
    fjord_state,
    kill_daemon,
    made,
    only,
    plan,
    record,
    sample,
    wait_for_guard,
)

from fjord.lab import Lab

pytestmark = pytest.mark.lab

LAYERS = HOST_AND_NETWORK
SWITCHOVER = "/var/lib/fjord/switchover.json"  # written when the guard starts
# Files the provider's server already has and a fresh apply replaces: their original
# content must survive in /var/lib/fjord/backups whatever happens.
REPLACED = ("/etc/network/interfaces", "/etc/libvirt/libvirt.conf",
            "/etc/libvirt/libvirtd.conf")


def originals(lab: Lab) -> dict[str, str]:
    return {path: lab.exec(["cat", path]).stdout for path in REPLACED}


def backed_up(lab: Lab, wanted: dict[str, str]) -> list[str]:
    """The original files no backup holds (empty: nothing lost)."""
    backups = fjord_state(lab) / "backups"
    held = {p.read_text(errors="replace") for p in backups.iterdir()} if backups.exists() else set()
    return [path for path, text in wanted.items() if text not in held]


def torn_state_files(lab: Lab) -> list[str]:
    """fjord's JSON state files that do not parse (atomic writes: there must be none)."""
    bad = []
    for path in fjord_state(lab).glob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError as exc:
            bad.append(f"{path.name}: {exc}")
    return bad


def second_apply(lab: Lab) -> tuple[list[dict[str, Any]], bool]:
    """The operator runs apply again at once. A switchover guard still waiting from the
    killed run makes it refuse (and say so); then it is run again once the guard is done.
    Returns the changes it made and whether it had to wait for the guard."""
    out = fjord(lab, "apply", "-c", EXAMPLE, "--yes", "--json", *only(LAYERS), check=False)
    if out.returncode != 0:
        assert "switchover is already pending" in out.stderr, out.stderr
        wait_for_guard(lab)
        return apply(lab, EXAMPLE, LAYERS), True
    return made(out.stdout), False


def test_sigkill_at_every_change_of_a_fresh_apply(make_lab: Callable[..., Lab]) -> None:
    first = make_lab()
    steps = [c["resource"] for c in plan(first, EXAMPLE, LAYERS)["changes"]]
    uplink = steps.index("uplink eth0") + 1
    # (change number, seconds after the switchover's guard started or None): at the start
    # of every change, and inside the switchover (moving, then verifying the gateways).
    points: list[tuple[int, float | None]] = [(n, None) for n in range(1, len(steps) + 1)]
    points += [(uplink, delay) for delay in (0.0, 0.01, 0.03, 0.1)]
    # (0.1 s in: found by the full loop; fjord was killed before it wrote the guard's PID
    # down, so the next apply did not wait for that guard, which then rolled it back)
    chosen = sample(points, 1, always=[(uplink, 0.01), (uplink, 0.1)])
    print(f"{len(steps)} changes; kill points {chosen} (seed {SEED}, full={FULL})")
    failures = []
    for i, (n, delay) in enumerate(chosen):
        lab = first if i == 0 else make_lab()
        before = originals(lab)
        if delay is None:
            killed, where = apply_with_fault(lab, n)
            what = f"SIGKILL at the start of change {n} ({steps[n - 1]})"
        else:
            killed, where = apply_with_fault(lab, n, delay, trigger=SWITCHOVER)
            what = f"SIGKILL {delay} s into the switchover (change {n})"
        try:
            assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (
                f"{what}: the apply was not killed (exit {killed.returncode}):\n"
                f"{killed.stderr[-2000:]}")
            # the n-th change apply starts: the plan's n-th, or a later one when apply,
            # re-reading, skipped one an earlier change settled (the flows libvirt's hook
            # rebuilt when a container started)
            assert where in steps[n - 1:], f"{what}: hit {where!r}"
            assert not torn_state_files(lab), torn_state_files(lab)
            _, waited = second_apply(lab)
            wait_for_guard(lab)  # a late rollback would undo the second apply: look after it
            assert_converged(lab, EXAMPLE, LAYERS, what=what)
            assert not backed_up(lab, before), f"{what}: originals lost: {backed_up(lab, before)}"
            record("faults.sigkill_apply", detail=what, waited_for_guard=waited)
        except AssertionError as exc:
            failures.append(str(exc))
            record("faults.sigkill_apply.failed", detail=what)
        finally:
            if lab is not first:
                lab.down()
    assert not failures, "\n\n".join(failures)


# --- the lab's daemons ------------------------------------------------------------------------


def test_daemons_killed_on_a_converged_host(lab: Lab) -> None:
    apply(lab, EXAMPLE, LAYERS)
    # ovsdb-server: `fjord check` says the network cannot be read; apply starts it again
    kill_daemon(lab, "ovsdb-server")
    # (Measured, not asserted: in the lab, ovs-vswitchd's userspace datapath stops
    # forwarding while its database is gone; a real server's systemd restarts it.)
    reachable = lab.upstream(["ping", "-c1", "-W1", "192.0.2.5"], check=False).ok
    print(f"host reachable with ovsdb-server down: {reachable}")
    out = fjord(lab, "check", "-c", EXAMPLE, "--json", check=False)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr
    failed = {r["name"]: r["detail"] for r in json.loads(out.stdout)["checks"] if not r["ok"]}
    assert "host: network as declared" in failed, failed
    changes = apply(lab, EXAMPLE, LAYERS)
    assert [c["resource"] for c in changes] == ["service openvswitch-switch"], changes
    assert daemon_pid(lab, "ovsdb-server") is not None
    # (the userspace datapath forwards again a few seconds after ovs-vswitchd caught up:
    # measured 2 to 4 s in the lab)
    took = assert_converged(lab, EXAMPLE, LAYERS, what="after ovsdb-server came back",
                            settle=15)
    print(f"forwarding again {took:.1f} s after the apply")
    assert lab.upstream(["ping", "-c1", "-W2", "192.0.2.5"], check=False).ok
    record("faults.daemon_killed", detail="ovsdb-server, converged host")
    # libvirtd
    kill_daemon(lab, "libvirtd")
    changes = apply(lab, EXAMPLE, LAYERS)
    assert [c["resource"] for c in changes] == ["service libvirtd"], changes
    assert daemon_pid(lab, "libvirtd") is not None
    assert_converged(lab, EXAMPLE, LAYERS, what="libvirtd started again")
    record("faults.daemon_killed", detail="libvirtd, converged host")


DAEMONS = ("ovsdb-server", "ovs-vswitchd", "libvirtd")


def test_daemon_killed_while_apply_runs(make_lab: Callable[..., Lab]) -> None:
    """A daemon fjord talks to dies when change N starts: the apply stops with a clear
    error (or finishes, when it needed the daemon no more), the next one converges."""
    first = make_lab()
    steps = [c["resource"] for c in plan(first, EXAMPLE, LAYERS)["changes"]]
    points = [(d, n) for d in DAEMONS for n in range(1, len(steps) + 1)]
    chosen = sample(points, 0, always=[("ovsdb-server", steps.index("bridge br-ex") + 1)])
    print(f"daemon kill points {chosen} (seed {SEED}, full={FULL})")
    failures = []
    for i, (daemon, n) in enumerate(chosen):
        lab = first if i == 0 else make_lab()
        what = f"{daemon} killed at the start of change {n} ({steps[n - 1]})"
        try:
            out, where = apply_with_fault(lab, n, 0.0, target=daemon)
            # the n-th change apply starts: the plan's n-th, or a later one when apply,
            # re-reading, skipped one an earlier change settled (the flows libvirt's hook
            # rebuilt when a container started)
            assert where in steps[n - 1:], f"{what}: hit {where!r}"
            assert "Traceback" not in out.stderr, f"{what}:\n{out.stderr}"
            if out.returncode != 0:
                # stopped at the first failure, naming what failed and what to do
                assert "fjord: error:" in out.stderr and "hint:" in out.stderr, out.stderr
            wait_for_guard(lab)
            apply(lab, EXAMPLE, LAYERS)
            assert daemon_pid(lab, daemon) is not None, f"{what}: not started again"
            assert_converged(lab, EXAMPLE, LAYERS, what=what, settle=15)
            record("faults.daemon_killed", detail=what, first_apply_exit=out.returncode)
        except AssertionError as exc:
            failures.append(str(exc))
            record("faults.daemon_killed.failed", detail=what)
        finally:
            if lab is not first:
                lab.down()
    assert not failures, "\n\n".join(failures)


# --- one apply at a time ----------------------------------------------------------------------


def test_a_second_apply_refuses_or_waits_and_never_interleaves(lab: Lab) -> None:
    lock = fjord_state(lab) / "apply.lock"
    first = subprocess.Popen(
        lab.exec_argv([*FJORD, "apply", "-c", EXAMPLE, "--yes", "--json", *only(LAYERS)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first apply never took the lock"
            time.sleep(0.02)
        holder = int(lock.read_text())
        # without --wait: refused at once, naming the holder
        start = time.monotonic()
        refused = fjord(lab, "apply", "-c", EXAMPLE, "--yes", *only(LAYERS), check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"another fjord apply is running (pid {holder})" in refused.stderr
        assert time.monotonic() - start < 30
        assert first.poll() is None, "the first apply ended before the test could race it"
        # with --wait: starts only once the first has finished, and finds nothing to do
        waiter = subprocess.Popen(
            lab.exec_argv([*FJORD, "apply", "-c", EXAMPLE, "--yes", "--json", "--wait", "300",
                           *only(LAYERS)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out1, err1 = first.communicate(timeout=300)
        first_done = time.monotonic()
        out2, err2 = waiter.communicate(timeout=300)
        assert first.returncode == 0, err1
        assert waiter.returncode == 0, err2
        assert json.loads(out1)["changes"], "the first apply made no change"
        assert json.loads(out2)["changes"] == [], "the waiting apply found work: interleaved?"
        assert time.monotonic() >= first_done
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_converged(lab, EXAMPLE, LAYERS, what="after two applies")
    record("faults.concurrent_apply", 2)
