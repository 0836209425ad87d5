"""Helpers of the reliability tests (tests/lab/test_reliability_*.py): run fjord in a lab,
kill it at a chosen change, stop a lab daemon, and photograph what a lab holds so that
"nothing changed" can be checked, not assumed.

Sampling: the fault loops run a few points in CI and every point with
``FJORD_FULL_FAULTS=1``; ``FJORD_FAULT_SEED`` picks the sample (default: the day, so
that CI walks through all the points over time, and a failure names its seed).

Figures: each test adds what it tried to ``FJORD_RELIABILITY_REPORT`` (a JSON file,
default none), which docs/reliability.md quotes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fjord.lab import Lab
from fjord.lab.daemons import PIDFILES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "lab.yaml")
FJORD = [sys.executable, "-m", "fjord"]
HOST_AND_NETWORK = ("host", "network")
ALL = ("host", "network", "containers")

# Runs argv in a container's namespaces and root: ``name join|- user|host argv...``
# (``join``: its cgroups too; ``host``: stay in the host's user namespace, as host root).
ENTER = """
import os, sys
from fjord.containers.libvirt import init_pid
from fjord.containers.limits import enter_cgroups
name, join, user, argv = sys.argv[1], sys.argv[2] == "join", sys.argv[3] == "user", sys.argv[4:]
pid = init_pid(name)
if join:
    enter_cgroups(pid)
own = os.readlink("/proc/self/ns/user")
userns = ["--user"] if user and os.readlink(f"/proc/{pid}/ns/user") != own else []
os.execvp("nsenter", ["nsenter", f"--target={pid}", *userns, "--mount", "--uts", "--ipc",
                      "--net", "--pid", "--cgroup", "--root", "--wd", "--", *argv])
"""

FULL = os.environ.get("FJORD_FULL_FAULTS", "").lower() in ("1", "true", "yes")
SEED = int(os.environ.get("FJORD_FAULT_SEED") or time.strftime("%Y%j"))


def sample(points: Sequence[Any], k: int, *, always: Iterable[Any] = ()) -> list[Any]:
    """All ``points`` with FJORD_FULL_FAULTS=1; else ``always`` and ``k`` more, by SEED."""
    if FULL:
        return list(points)
    chosen = [p for p in points if p in set(always)]
    rest = [p for p in points if p not in chosen]
    chosen += random.Random(SEED).sample(rest, min(k, len(rest)))
    return sorted(chosen, key=list(points).index)


# --- figures for docs/reliability.md -----------------------------------------------------------


def record(metric: str, count: int = 1, **detail: Any) -> None:
    """Add ``count`` to ``metric`` in $FJORD_RELIABILITY_REPORT (several pytest runs may
    share the file: it is locked while updated)."""
    path = os.environ.get("FJORD_RELIABILITY_REPORT")
    if not path:
        return
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        try:
            data = json.loads(fh.read() or "{}")
        except ValueError:
            data = {}
        entry = data.setdefault(metric, {"count": 0, "details": []})
        entry["count"] += count
        if detail:
            entry["details"].append(detail)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- running fjord in a lab ---------------------------------------------------------------------


def fjord(lab: Lab, *args: str, check: bool = True, timeout: float = 300,
          env: dict[str, str] | None = None,
          prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``fjord ARGS`` on the lab's server; ``prefix`` goes before the interpreter (setpriv)."""
    argv = lab.exec_argv([*prefix, *FJORD, *args])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"fjord {' '.join(args)} -> {out.returncode}\n"
                             f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return out


def inside(lab: Lab, name: str, command: str, *, join: bool = False, host_root: bool = False,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """``sh -c command`` as root in container ``name``: its namespaces and root, its user
    namespace unless ``host_root`` (the worst case: a tenant that is root on the host),
    its cgroups too with ``join``. A failure raises unless ``check`` is false."""
    out = subprocess.run(lab.exec_argv([sys.executable, "-c", ENTER, name,
                                        "join" if join else "-", "host" if host_root else "user",
                                        "sh", "-c", command]),
                         capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"{name}: {command} -> {out.returncode}\n{out.stdout}{out.stderr}")
    return out


def at_a_terminal(argv: list[str], answer: str, before_answer: Callable[[], None] = lambda: None,
                  timeout: float = 900, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``argv`` with a terminal for stdin, stdout and stderr (as the owner at a
    keyboard); when apply asks, run ``before_answer``, then answer. The status and
    output."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=str(ROOT))
    os.close(slave)
    out = b""
    asked = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal is closed
                break
            if not data:
                break
            out += data
            if not asked and b"Apply these changes? [y/N]: " in out:
                before_answer()
                os.write(master, answer.encode() + b"\r")
                asked = True
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, out.decode(errors="replace")


# A well-formed public key, for configurations whose images are built ahead (the image
# does not depend on keys).
SAMPLE_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx5Vbq3+W1S2bUhN3mAJ1C2mrwLqmF9G3zfLwXbCzqJ "
              "images@example.net")


def build_images(*configs: str) -> None:
    """The images ``configs`` (YAML texts) need, built on the machine into the cache every
    lab shares (cached: nothing to do when they are there). A lab cannot download them:
    a test whose containers differ from the example's builds what its own file needs."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fjord-images-") as tmp:
        for i, text in enumerate(configs):
            path = Path(tmp) / f"config-{i}.yaml"
            path.write_text(text)
            subprocess.run([*FJORD, "image", "build", "-c", str(path), "--for-labs"],
                           check=True, cwd=ROOT, capture_output=True, timeout=900)


def only(layers: Sequence[str]) -> list[str]:
    return [a for layer in layers for a in ("--only", layer)]


def apply(lab: Lab, config: str = EXAMPLE, layers: Sequence[str] = HOST_AND_NETWORK,
          *extra: str) -> list[dict[str, Any]]:
    out = fjord(lab, "apply", "-c", config, "--yes", "--json", *only(layers), *extra)
    return made(out.stdout)


def made(stdout: str) -> list[dict[str, Any]]:
    """The changes an ``apply --json`` made (not those an earlier change settled)."""
    changes: list[dict[str, Any]] = json.loads(stdout)["changes"]
    return [c for c in changes if c.get("outcome", "done") == "done"]


def plan(lab: Lab, config: str = EXAMPLE,
         layers: Sequence[str] = HOST_AND_NETWORK) -> dict[str, Any]:
    out = fjord(lab, "plan", "-c", config, "--json", *only(layers))
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def checks(lab: Lab, config: str = EXAMPLE, prefixes: Sequence[str] = ("host:",)
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`fjord check --json`: (all checks, the failed ones among those named ``prefixes``).

    Host/network tests look at the host's checks only: the containers' come from the
    containers layer, which those tests do not apply."""
    out = fjord(lab, "check", "-c", config, "--json", check=False)
    try:
        results: list[dict[str, Any]] = json.loads(out.stdout)["checks"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"fjord check gave no JSON ({exc}):\n{out.stdout}\n{out.stderr}"
                             ) from None
    failed = [r for r in results if not r["ok"] and r["name"].startswith(tuple(prefixes))]
    return results, failed


def assert_converged(lab: Lab, config: str = EXAMPLE,
                     layers: Sequence[str] = HOST_AND_NETWORK,
                     prefixes: Sequence[str] = ("host:",), what: str = "",
                     settle: float = 0.0) -> float:
    """`fjord check` passes (for ``prefixes``; retried for up to ``settle`` seconds) and
    the plan is empty. Returns how long the check took to pass."""
    start = time.monotonic()
    while True:
        _, failed = checks(lab, config, prefixes)
        if not failed or time.monotonic() - start > settle:
            break
        time.sleep(0.5)
    took = time.monotonic() - start
    assert not failed, f"{what}: fjord check failed: {failed}"
    left = plan(lab, config, layers)["changes"]
    assert left == [], f"{what}: still planned after convergence: {left}"
    return took


# --- SIGKILL at the Nth change ----------------------------------------------------------------

# fjord's apply, with the operator's progress reporter wrapped: when change N starts (or,
# with a TRIGGER path, once that file exists after change N started), plus DELAY seconds,
# SIGKILL goes to TARGET: the apply itself (0), or another process such as one of the
# lab's daemons. A real SIGKILL of the real `fjord apply`: no handler, no `finally`, what
# `kill -9` or the OOM killer does. Nothing in fjord knows; the wrapper only picks the
# moment.
KILLER = textwrap.dedent("""
    import os, signal, sys, threading, time
    import fjord.ui
    n, delay, target, trigger = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    started = fjord.ui.ProgressReporter.started
    seen, what = [0], [""]
    def kill():
        if trigger != "-":
            while not os.path.exists(trigger):
                time.sleep(0.001)
        if delay > 0:
            time.sleep(delay)
        # TARGET: 0 (this apply), a PID, or a daemon's PID file (read now: the apply
        # may have restarted the daemon since it began)
        pid = int(open(target).read()) if target.startswith("/") else int(target)
        sys.stderr.write(f"FAULT: SIGKILL to {pid or 'fjord'} at change {n}: {what[0]}\\n")
        sys.stderr.flush()
        os.kill(pid or os.getpid(), signal.SIGKILL)
    def wrapped(self, change):
        seen[0] += 1
        if seen[0] == n:
            what[0] = change.resource
            if delay <= 0 and trigger == "-":
                kill()
            threading.Thread(target=kill, daemon=True).start()
        return started(self, change)
    fjord.ui.ProgressReporter.started = wrapped
    sys.argv = ["fjord", *sys.argv[5:]]
    from fjord.cli import main
    main()
""")


def apply_with_fault(lab: Lab, n: int, delay: float = 0.0, target: int | str = 0,
                     config: str = EXAMPLE, layers: Sequence[str] = HOST_AND_NETWORK,
                     trigger: str | None = None,
                     timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run `fjord apply` and send SIGKILL to ``target`` (0: the apply itself; a PID; a
    daemon's name, its PID read from its PID file at that moment) when its
    ``n``-th change starts, or when ``trigger`` (a path on the server) exists after that,
    plus ``delay`` seconds. Returns the finished process and the resource the fault hit
    ("" if the apply never got that far)."""
    if isinstance(target, str):
        target = "/run/" + PIDFILES[target]
    argv = lab.exec_argv([sys.executable, "-c", KILLER, str(n), str(delay), str(target),
                          trigger or "-", "apply", "-c", config, "--yes", *only(layers)])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    marker = [line for line in out.stderr.splitlines() if line.startswith("FAULT: ")]
    where = marker[0].split(": ", 2)[2] if marker else ""
    return out, where


def guard_pid(lab: Lab) -> int | None:
    """The switchover guard still waiting (its PID), if any."""
    path = fjord_state(lab) / "switchover.json"
    try:
        pid = json.loads(path.read_text()).get("guard_pid")
    except (OSError, ValueError):
        return None
    if not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return int(pid)


def switchover_locked(lab: Lab) -> bool:
    """Whether a switchover or its guard holds the switchover lock (also a guard whose
    PID the killed apply never wrote down)."""
    path = fjord_state(lab) / "switchover.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def wait_for_guard(lab: Lab, timeout: float = 30.0) -> float:
    """Until no switchover guard waits; returns how long that took."""
    start = time.monotonic()
    while guard_pid(lab) is not None or switchover_locked(lab):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the switchover guard still runs after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


# --- the lab's daemons -------------------------------------------------------------------------


def daemon_pid(lab: Lab, daemon: str) -> int | None:
    pid: int | None = lab.status()["server"]["daemons"][daemon]
    return pid


def kill_daemon(lab: Lab, daemon: str, sig: int = signal.SIGKILL, timeout: float = 10) -> int:
    """Kill one of the lab's daemons by the PID the lab records for it; wait until gone."""
    pid = daemon_pid(lab, daemon)
    assert pid is not None, f"{daemon} is not running in lab {lab.name}"
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while daemon_pid(lab, daemon) is not None:
        assert time.monotonic() < deadline, f"{daemon} ({pid}) survived signal {sig}"
        time.sleep(0.02)
    return pid


# --- what a lab holds ----------------------------------------------------------------------------

def fjord_state(lab: Lab) -> Path:
    """The server's /var/lib/fjord, as the machine sees it."""
    return lab.dir / "var" / "lib" / "fjord"


CAPTURE = textwrap.dedent("""
    import json, subprocess, pathlib
    def sh(*argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip()}"
    def js(*argv):
        text = sh(*argv)
        try:
            return json.loads(text)
        except ValueError:
            return text
    VOLATILE = {"stats", "stats64", "ifindex", "link_index", "operstate", "linkmode",
                "valid_life_time", "preferred_life_time", "carrier_changes", "carrier",
                "carrier_up_count", "carrier_down_count", "expires", "used", "lastused",
                "age", "num_tx_queues", "num_rx_queues", "promiscuity", "allmulti"}
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in sorted(x.items()) if k not in VOLATILE}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    import time
    deadline = time.monotonic() + 5  # until duplicate address detection has settled
    while "tentative" in sh("ip", "-j", "address") and time.monotonic() < deadline:
        time.sleep(0.1)
    out = {
        "links": clean(js("ip", "-j", "-d", "link")),
        "addresses": clean(js("ip", "-j", "address")),
        "routes4": clean(js("ip", "-j", "-4", "route", "show", "table", "all")),
        "routes6": clean(js("ip", "-j", "-6", "route", "show", "table", "all")),
        "proxy_ndp": sh("ip", "-6", "neigh", "show", "proxy"),
        "rules": sh("ip", "rule") + sh("ip", "-6", "rule"),
        "nft": sh("nft", "-s", "list", "ruleset"),
        "ovs": sh("ovs-vsctl", "--format=json", "--columns=name,datapath_type,ports,"
                  "other_config,external_ids,fail_mode,protocols", "list", "Bridge"),
        "ovs_ports": sh("ovs-vsctl", "--format=json", "--columns=name,interfaces,tag,"
                        "trunks,other_config,external_ids", "list", "Port"),
        "ovs_ifaces": sh("ovs-vsctl", "--format=json", "--columns=name,type,options,"
                         "mac,external_ids", "list", "Interface"),
        "domains": sh("virsh", "-c", "lxc:///", "list", "--all", "--name"),
        "sysctl": {k: pathlib.Path("/proc/sys", k.replace(".", "/")).read_text().strip()
                   for k in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                             "net.ipv6.conf.all.proxy_ndp", "net.ipv4.conf.all.arp_ignore")},
    }
    print(json.dumps(out, sort_keys=True))
""")

# Files that change by themselves in a lab that nobody touches (daemons' bookkeeping).
NOISE = ("etc.upper/openvswitch/.conf.db.~lock~", "var/lib/libvirt/dnsmasq",
         "var/lib/fjord/apply.lock")


def file_tree(top: Path, base: Path) -> dict[str, str]:
    """Every entry under ``top``: type, mode, owner and content hash (symlinks: target)."""
    out: dict[str, str] = {}
    if not top.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(base))
            if rel.startswith(NOISE):
                continue
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            desc = f"{oct(st.st_mode)} {st.st_uid}:{st.st_gid}"
            if stat.S_ISREG(kind):
                desc += " " + hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            elif stat.S_ISLNK(kind):
                desc += " -> " + os.readlink(p)
            elif stat.S_ISCHR(kind):
                desc += f" char {st.st_rdev}"  # an overlay whiteout: a deletion
            out[rel] = desc
    return out


def capture(lab: Lab) -> dict[str, Any]:
    """What the lab's server holds: links, addresses, routes, proxy NDP, the nft ruleset,
    Open vSwitch's bridges, ports and interfaces, libvirt's domains, forwarding sysctls,
    its daemons, and every file of its /etc, /root and /var/lib/fjord (and libvirt's and
    Open vSwitch's /var/lib)."""
    state: dict[str, Any] = json.loads(lab.exec([sys.executable, "-c", CAPTURE]).stdout)
    state["daemons"] = lab.status()["server"]["daemons"]
    files: dict[str, str] = {}
    for top in ("etc.upper", "root.upper", "var/lib/fjord", "var/lib/libvirt",
                "var/lib/openvswitch"):
        files.update(file_tree(lab.dir / top, lab.dir))
    state["files"] = files
    return state


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs, one line per item (files one by one)."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if key == "files":
            for path in sorted(set(a) | set(b)):
                if a.get(path) != b.get(path):
                    out.append(f"file {path}: {a.get(path)} -> {b.get(path)}")
        elif isinstance(a, list) and isinstance(b, list):
            was = {json.dumps(x, sort_keys=True) for x in a}
            now = {json.dumps(x, sort_keys=True) for x in b}
            out += [f"{key}: gone {x[:400]}" for x in sorted(was - now)]
            out += [f"{key}: new {x[:400]}" for x in sorted(now - was)]
        else:
            out.append(f"{key}: {json.dumps(a)[:400]} -> {json.dumps(b)[:400]}")
    return out


@contextlib.contextmanager
def unchanged(lab: Lab, what: str) -> Iterator[None]:
    """Assert that the block leaves the lab exactly as it was."""
    before = capture(lab)
    yield
    diff = differences(before, capture(lab))
    assert not diff, f"{what} changed the lab:\n" + "\n".join(diff[:40])


# --- what must come back after a reboot ---------------------------------------------------------

INVENTORY = textwrap.dedent("""
    import json, re, subprocess, pathlib, time
    def sh(*argv):
        return subprocess.run(argv, capture_output=True, text=True).stdout
    def js(*argv):
        try:
            return json.loads(sh(*argv) or "[]")
        except ValueError:
            return []
    deadline = time.monotonic() + 5
    while "tentative" in sh("ip", "-j", "address") and time.monotonic() < deadline:
        time.sleep(0.1)
    # container ports (vnetN) and the userspace datapath's ovs-netdev come and go with
    # their names; br-int's MAC (and so its EUI-64 link-local address) is random
    skip = re.compile(r"^(vnet[0-9]+|ovs-netdev)$")
    addresses = sorted(
        f"{link['ifname']} {a['local']}/{a['prefixlen']}"
        for link in js("ip", "-j", "address") if not skip.match(link["ifname"])
        for a in link.get("addr_info", [])
        if not (link["ifname"] == "br-int" and a["local"].startswith("fe80:")
                and a["local"] != "fe80::1"))
    routes = sorted(
        f"{r['dst']} via {r.get('gateway', '-')} dev {r.get('dev', '-')}"
        for fam in ("-4", "-6") for r in js("ip", "-j", fam, "route")
        if not skip.match(r.get("dev", "")))
    tables = re.split(r"(?m)^(?=table )", sh("nft", "-s", "list", "ruleset"))
    bridges = {}
    for br in sh("ovs-vsctl", "list-br").split():
        ports = [p for p in sh("ovs-vsctl", "list-ports", br).split() if not skip.match(p)]
        dp = sh("ovs-vsctl", "get", "bridge", br, "datapath_type").strip()
        bridges[br] = {"datapath": dp, "ports": sorted(ports)}
    domains = {}
    for line in sh("virsh", "-c", "lxc:///", "list", "--all").splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) >= 3:
            domains[parts[1]] = parts[2].strip()
    print(json.dumps({
        "addresses": addresses, "routes": routes,
        "proxy_ndp": sorted(sh("ip", "-6", "neigh", "show", "proxy").splitlines()),
        "nft": sorted(t for t in tables if t.strip()),
        "bridges": bridges, "domains": domains,
        "sysctl": {k: pathlib.Path("/proc/sys", k.replace(".", "/")).read_text().strip()
                   for k in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                             "net.ipv6.conf.all.proxy_ndp", "net.ipv4.conf.all.arp_ignore")},
    }, sort_keys=True))
""")


def inventory(lab: Lab) -> dict[str, Any]:
    """What a boot must bring back, by meaning rather than by bytes: addresses, routes
    (main tables), proxy NDP entries, each nft table, the bridges with their datapath and
    ports (not the containers' ports, named at random), libvirt's domains with their
    state, and the forwarding sysctls."""
    result: dict[str, Any] = json.loads(lab.exec([sys.executable, "-c", INVENTORY]).stdout)
    return result
