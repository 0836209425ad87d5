"""`fjord check` never aborts (issue 13): on a converged lab, the container's name servers
stop answering (their answers are dropped as they enter the container's network
namespace: the resolver waits, as it did after the real reboot; dropping the queries
on their way out would not do, sendmsg() would fail at once), and `fjord check --json`
still prints every line, says ✗ for the name lookup with a useful hint, exits non-zero,
and leaves nothing running. While it hangs, the probe is inside the container's
cgroups, not the host's session; `fjord status` says the same as `check` about the
container's cgroups."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = [sys.executable, "-m", "fjord"]
# The answers of the container's name servers (both), dropped silently on the way in.
BLACKHOLE = """table inet probe_blackhole {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto { udp, tcp } th sport 53 drop
    }
}
"""
# In the lab server: the container's init, and every process in its PID namespace with
# its command and memory cgroup.
MEMBERS = """
import json, os, sys
from pathlib import Path
from fjord.containers.limits import parse_proc_cgroup, running
c = running(sys.argv[1])
ns = os.readlink(f"/proc/{c.init}/ns/pid")
out = []
for d in Path("/proc").iterdir():
    try:
        if d.name.isdigit() and os.readlink(d / "ns/pid") == ns:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            out.append([int(d.name), (d / "comm").read_text().strip(),
                        parse_proc_cgroup((d / "cgroup").read_text()).get("memory"),
                        stat[0], int(stat[1])])
    except OSError:
        pass
print(json.dumps({"init": c.init, "own": c.groups["memory"], "members": out}))
"""


@pytest.fixture(scope="module")
def lab(lab_root: None) -> Iterator[Lab]:
    subprocess.run([*FJORD, "image", "build", "-c", str(EXAMPLE), "--for-labs"], check=True,
                   cwd=REPO, capture_output=True, timeout=900)
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=str(EXAMPLE), owner=os.getpid())
        lab.exec(["install", "-D", "-m", "0644", str(EXAMPLE), "/etc/fjord/fjord.yaml"])
        out = subprocess.run(lab.exec_argv([*FJORD, "apply", "--yes"]), capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        yield lab
    finally:
        lab.down()


def members(lab: Lab) -> dict[str, object]:
    return json.loads(lab.exec([sys.executable, "-c", MEMBERS, "test"]).stdout)


def check(lab: Lab) -> tuple[int, list[dict[str, object]], str]:
    out = subprocess.run(lab.exec_argv([*FJORD, "check", "--json"]), capture_output=True,
                         text=True, timeout=300)
    return out.returncode, json.loads(out.stdout)["checks"], out.stderr


def test_a_hung_name_lookup_is_one_failed_line(lab: Lab) -> None:
    code, before, err = check(lab)
    assert code == 0, (before, err)
    names = [c["name"] for c in before]
    resolves = "container test: resolves far.example.org"
    assert resolves in names

    init = members(lab)["init"]
    lab.exec(["nsenter", f"--target={init}", "--net", "nft", "-f", "-"], input=BLACKHOLE)
    try:
        proc = subprocess.Popen(lab.exec_argv([*FJORD, "check", "--json"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # while the lookup hangs: the probe is in the container's memory cgroup
        seen = None
        deadline = time.monotonic() + 60
        while seen is None and time.monotonic() < deadline and proc.poll() is None:
            m = members(lab)
            seen = next((p for p in m["members"] if p[1] == "getent"), None)  # type: ignore[attr-defined]
            time.sleep(0.3)
        start = time.monotonic()
        out, err = proc.communicate(timeout=300)
        assert seen is not None, ("the name lookup never showed up in the container", out,
                                  err)
        own = str(members(lab)["own"])
        assert seen[2] == own or str(seen[2]).startswith(own + "/"), (seen, own)

        assert proc.returncode == 1, (out, err)
        assert "fjord: error" not in err
        after = json.loads(out)["checks"]
        assert [c["name"] for c in after] == names  # every line, in the same order
        failed = {c["name"]: c["detail"] for c in after if not c["ok"]}
        assert list(failed) == [resolves], failed
        assert str(failed[resolves]).startswith("no answer for far.example.org after 15 s: "
                                                "its name servers do not answer")
        assert time.monotonic() - start < 30
        # nothing of the probe is left: no getent, no nsenter, in the container or here
        # (a killed process is a zombie for a moment, until the container's init reaps
        # it: that is not running, and it goes)
        left = [p for p in members(lab)["members"]  # type: ignore[attr-defined]
                if p[1] in ("getent", "nsenter")]
        assert [p for p in left if p[3] != "Z"] == [], left
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [p for p in members(lab)["members"]  # type: ignore[attr-defined]
                    if p[1] in ("getent", "nsenter")]
        assert left == [], left
        assert lab.exec(["pgrep", "-f", "[g]etent hosts far.example.org"], check=False).stdout \
            == ""
    finally:
        lab.exec(["nsenter", f"--target={init}", "--net", "nft", "delete", "table", "inet",
                  "probe_blackhole"], check=False)


def test_status_says_what_check_says_about_cgroups(lab: Lab) -> None:
    _, checks, _ = check(lab)
    from_check = {str(c["name"]).removeprefix("container test: "): (c["ok"], c["detail"])
                  for c in checks if str(c["name"]).startswith("container test: ")}
    status = json.loads(lab.exec([*FJORD, "status", "--json"]).stdout)
    (item,) = [c for c in status["containers"] if c["name"] == "test"]
    lines = {c["check"]: (c["ok"], c["detail"]) for c in item["cgroups"]}
    assert set(lines) == {"memory limit enforced", "sees only its own cgroups",
                          "syscall filter and capabilities", "limit-aware /proc (lxcfs)"}
    for what, (ok, detail) in lines.items():
        assert ok, (what, detail)
        assert from_check[what][0] == ok
