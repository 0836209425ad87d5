"""The operator's side of fjord on a simulated server (issue 16): `fjord lab exec`
finds the fjord that runs it, the exit-code contract on a real (simulated) host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples" / "lab.yaml")
FJORD = str(Path(sys.executable).parent / "fjord")


def _without_venv_path() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and p != venv_bin and not Path(p, "fjord").exists()]
    return {**os.environ, "PATH": os.pathsep.join(path or ["/usr/bin", "/bin"])}


def test_lab_exec_finds_the_running_fjord_without_path(lab: Lab) -> None:
    env = _without_venv_path()
    out = subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", "fjord", "--version"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "version" in out.stdout
    # a shell in the lab finds it too
    out = subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", "sh", "-c",
                          "fjord --version"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def test_exit_codes_on_a_fresh_and_a_converged_server(lab: Lab, tmp_path: Path) -> None:
    def fjord(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", FJORD, *args,
                               "-c", EXAMPLE],
                              capture_output=True, text=True, timeout=900)

    pending = fjord("plan", "--detailed-exitcode")
    assert pending.returncode == 4, pending.stdout + pending.stderr
    assert fjord("plan").returncode == 0
    # plan -v (issue 16 item 4): 80 columns (stdout is not a terminal), the commands
    # that read each resource under it, the diffs apart, the nft table's among them
    verbose = fjord("plan", "-v")
    assert verbose.returncode == 0, verbose.stderr
    listing, marker, diffs = verbose.stdout.partition("Diffs (- as it is, + as declared):")
    assert marker, verbose.stdout
    assert all(len(line) <= 80 for line in listing.splitlines()), listing
    print(verbose.stdout)
    # the reads are under their resource (what runs outside them, as the rendering of
    # a diff, is still logged on stderr)
    assert "       $ nft -s list table inet fjord" in listing, listing
    assert "run: nft -s list table" not in verbose.stderr
    assert "nftables inet fjord" in diffs and "+++ table inet fjord (declared)" in diffs
    assert any(line.startswith("+") and line[1:].strip() == "ct state established,related "
               "accept comment \"replies\"" for line in diffs.splitlines()), diffs
    applied = fjord("apply", "--yes", "--json")
    assert applied.returncode == 0, applied.stderr
    outcomes = json.loads(applied.stdout)["changes"]
    assert outcomes and {c["outcome"] for c in outcomes} <= {"done", "settled"}, outcomes
    assert all(isinstance(c["duration_s"], float) for c in outcomes
               if c["outcome"] == "done"), outcomes
    # the domain as libvirt has it against the declared one, for a memory change
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(Path(EXAMPLE).read_text().replace("memory: 512MiB", "memory: 768MiB"))
    domain = subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", FJORD, "plan",
                             "-v", "-c", str(bigger)], capture_output=True, text=True,
                            timeout=300)
    _, marker, diffs = domain.stdout.partition("Diffs (- as it is, + as declared):")
    assert "domain test (libvirt XMLDesc)" in diffs, domain.stdout + domain.stderr
    assert '-  <memory unit="KiB">524288</memory>' in diffs
    assert '+  <memory unit="KiB">786432</memory>' in diffs
    same = fjord("plan", "--detailed-exitcode", "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["changes"] == []
    assert fjord("status").returncode == 0
    assert fjord("check").returncode == 0

    # container commands: list needs no file, unknown names are unknown, several names
    def bare(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", FJORD, *args],
                              capture_output=True, text=True, timeout=300)

    listed = bare("container", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["containers"]
    assert row["name"] == "test" and row["state"] == "running" and row["in_file"] is None
    unknown = bare("container", "exec", "nope", "--", "true")
    assert unknown.returncode == 1 and "unknown container: nope" in unknown.stderr
    assert "not running" not in unknown.stderr
    assert bare("container", "stop", "test", "test").returncode == 0
    stopped = bare("container", "exec", "test", "--", "true")
    assert "test is not running" in stopped.stderr
    assert fjord("status").returncode == 1          # drift: test is stopped
    assert fjord("plan", "--detailed-exitcode").returncode == 4
    started = bare("container", "start", "-c", EXAMPLE, "test")
    assert started.returncode == 0, started.stderr
    assert bare("container", "exec", "test", "--", "true").returncode == 0
    # not root: fjord says so, and says nothing is fine
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run([FJORD, "lab", "exec", "--name", lab.name, "--", *nobody, FJORD,
                          "plan", "-c", EXAMPLE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "needs root" in out.stdout + out.stderr
    assert "No changes: the host is as declared." not in out.stdout
