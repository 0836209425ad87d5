"""The command-line contract, run as a user would (subprocess, no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FJORD = [sys.executable, "-m", "fjord"]
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "FJORD_STATE_DIR": "/nonexistent-fjord-state", **(env or {})}
    return subprocess.run([*FJORD, *args], capture_output=True, text=True, cwd=ROOT, env=e,
                          timeout=60)


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("validate", "plan", "apply", "status", "schema", "lab"):
        assert f"  {cmd}" in out.stdout


def test_validate_examples():
    for name in ("seed", "lab"):
        out = run("validate", "-c", f"examples/{name}.yaml")
        assert out.returncode == 0, out.stderr
        assert "valid (1 container)" in out.stdout


def test_validate_uses_fjord_config_env():
    out = run("validate", env={"FJORD_CONFIG": "examples/lab.yaml"})
    assert out.returncode == 0


def test_missing_file_is_exit_2_without_traceback():
    out = run("validate", "-c", "/nonexistent.yaml")
    assert out.returncode == 2
    assert "no such file" in out.stderr and "Traceback" not in out.stderr


def test_plan_json_shape_for_seed_without_touching_anything():
    out = run("plan", "-c", "examples/seed.yaml", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data["changes"], list)
    for change in data["changes"]:
        assert set(change) == {"resource", "action", "detail"}
        assert change["action"] in ("create", "update", "delete")


def test_apply_without_root_is_refused_clearly_while_plan_works():
    # As root (CI), drop to nobody for this one so the refusal is really exercised.
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = [*(prefix if os.geteuid() == 0 else []), *FJORD]
    env = {**os.environ, "FJORD_STATE_DIR": "/nonexistent-fjord-state"}
    out = subprocess.run([*argv, "apply", "-c", "examples/lab.yaml", "--yes"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 1 and "needs root" in out.stderr, out.stderr
    out = subprocess.run([*argv, "plan", "-c", "examples/lab.yaml"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    # the plan is shown, and that it is incomplete without root is said (exit 3)
    assert "Plan:" in out.stdout and "cannot read" in out.stdout, out.stderr
    assert out.returncode == 3 and "needs root" in out.stderr, out.stderr


def test_apply_without_terminal_needs_yes(tmp_path):
    # With root, apply refuses before changing anything when there is no --yes and no TTY.
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to get past the root check")
    out = run("apply", "-c", "examples/seed.yaml",
              env={"FJORD_STATE_DIR": str(tmp_path)})
    assert out.returncode == 1
    assert "needs confirmation" in out.stderr
    assert not (tmp_path / "allocations.json").exists()


def test_thousands_of_problems_show_the_first_ones_and_a_count(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhost:\n  fqdn: oslo.example.net\n"
                   "  ipv4: {address: 192.0.2.5/27, gateway: 192.0.2.1}\n"
                   "  dns: [192.0.2.53]\n  fqnd: x\n"
                   + "".join(f"  unknown{i}: 1\n" for i in range(1000)))
    out = run("validate", "-c", str(bad))
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 202, lines[-3:]
    # the first problems by position, the first with its suggestion
    assert "host.fqnd: unknown key 'fqnd' (did you mean 'fqdn'?)" in lines[0]
    assert lines[-2] == "… and 801 more (the first 200 are shown)"
    assert lines[-1] == "1001 problem(s); nothing was changed."


def test_lab_exec_runs_the_running_fjord_without_path():
    # `fjord lab exec -- fjord …` must not depend on the venv being on PATH
    from fjord.lab.enter import running_fjord

    bindir = str(Path(sys.executable).parent)
    env = {"PATH": "/usr/bin:/bin"}
    argv = running_fjord(["fjord", "plan"], env)
    assert argv == [str(Path(bindir, "fjord")), "plan"]
    assert env["PATH"] == f"/usr/bin:/bin:{bindir}"
    assert running_fjord(["ip", "link"], env) == ["ip", "link"]
    assert env["PATH"] == f"/usr/bin:/bin:{bindir}"  # added once


def test_jinja2_is_no_dependency():
    text = (ROOT / "pyproject.toml").read_text()
    assert "jinja2" not in text.lower()
    imports = subprocess.run(["grep", "-rlE", "^\\s*(import|from) jinja2", "src", "tests"],
                             capture_output=True, text=True, cwd=ROOT)
    assert imports.stdout == ""


def test_shell_completion_works_and_is_documented():
    out = run("container", "st", env={"_FJORD_COMPLETE": "bash_complete",
                                      "COMP_WORDS": "fjord container st", "COMP_CWORD": "2"})
    assert out.returncode == 0 and out.stdout.split() == ["plain,start", "plain,stop"]
    out = run(env={"_FJORD_COMPLETE": "bash_source"})
    assert "complete" in out.stdout and "_FJORD_COMPLETE=bash_complete" in out.stdout
    assert "_FJORD_COMPLETE=bash_source fjord" in (ROOT / "docs/operations.md").read_text()
