"""Hostile configurations on a simulated server: `fjord apply --yes` with each of them
exits 2 and the server is exactly as before (links, addresses, routes, proxy NDP, nft
ruleset, Open vSwitch, libvirt's domains, sysctls, daemons, and every file of its /etc,
/root, /var/lib/fjord, /var/lib/libvirt and /var/lib/openvswitch).

The corpus is tests/unit/test_reliability_inputs.py's. In CI: every file-level attack and
one value case in ten; all of them with FJORD_FULL_FAULTS=1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faults import EXAMPLE, FJORD, FULL, apply, capture, differences, record

from fjord.lab import Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import test_reliability_inputs as corpus

pytestmark = pytest.mark.lab

# Runs in the lab: each file through fjord's own entry point (as `fjord apply -c FILE
# --yes` does), in one process (a fresh interpreter per file would take minutes). Files
# the loader accepts are skipped before apply sees them: they are harmless values of
# their place (the unit test checks that), and applying them would change the server.
RUNNER = textwrap.dedent("""
    import io, json, sys
    from contextlib import redirect_stderr, redirect_stdout
    from fjord.cli import main
    from fjord.config.desired import load
    from fjord.config.problems import ConfigError
    out = {}
    for path in sys.argv[1:]:
        try:
            load(path)
            out[path] = "valid"
            continue
        except ConfigError:
            pass
        sys.argv = ["fjord", "apply", "-c", path, "--yes"]
        err = io.StringIO()
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(err):
                main()
            out[path] = 0
        except SystemExit as exc:
            out[path] = exc.code if isinstance(exc.code, int) else 1
        if out[path] != 2 or "Traceback" in err.getvalue():
            out[path] = f"exit {out[path]}: {err.getvalue()[-500:]}"
    print(json.dumps(out))
""")


def chosen_cases() -> list[corpus.Case]:
    if FULL:
        return corpus.ALL_CASES
    return corpus.FILE_CASES + corpus.VALUE_CASES[::10]


def test_hostile_configurations_change_nothing_on_a_converged_server(
        lab: Lab, tmp_path: Path) -> None:
    apply(lab, EXAMPLE)
    cases = chosen_cases()
    paths = corpus.write_corpus(tmp_path / "hostile", cases)
    before = capture(lab)
    out = lab.exec([sys.executable, "-c", RUNNER, *map(str, paths)], timeout=1800)
    results = json.loads(out.stdout)
    after = capture(lab)
    diff = differences(before, after)
    assert not diff, "hostile configurations changed the server:\n" + "\n".join(diff[:40])
    wrong = {c.name: results[str(p)] for c, p in zip(cases, paths, strict=True)
             if results[str(p)] not in (2, "valid")}
    refused = sum(1 for r in results.values() if r == 2)
    print(f"{len(cases)} hostile configurations applied: {refused} refused with exit 2, "
          f"{len(cases) - refused - len(wrong)} harmless (skipped), {len(wrong)} wrong")
    record("inputs.applied_in_lab_refused", refused)
    assert not wrong, json.dumps(wrong, indent=1)[:5000]


def test_the_command_line_and_lab_up_refuse_them_too(lab: Lab, tmp_path: Path) -> None:
    """Real processes: `fjord apply` on the server, `fjord lab up` on the machine (which
    reads the file's host section) — exit 2, no lab made, nothing changed."""
    picked = [c for c in corpus.FILE_CASES if c.name in (
        "billion-laughs", "duplicate-top-key", "nul-byte", "python-object", "too-large")]
    picked += [c for c in corpus.VALUE_CASES if c.name in (
        "host.fqdn+=shell-subst", "host.uplink=traversal", "host.uplink+=newline-iface",
        "containers.<name>=xml-close", "host.apt.mirror+=escape")]
    assert len(picked) == 10
    paths = corpus.write_corpus(tmp_path / "picked", picked)
    before = capture(lab)
    for case, path in zip(picked, paths, strict=True):
        out = subprocess.run(lab.exec_argv([*FJORD, "apply", "-c", str(path), "--yes"]),
                             capture_output=True, text=True, timeout=120)
        corpus.assert_refused(out.returncode, out.stdout, out.stderr, f"apply {case.name}")
        name = f"h{abs(hash(case.name)) % 10**8}"
        up = subprocess.run([*FJORD, "lab", "up", "--name", name, "-c", str(path)],
                            capture_output=True, text=True, timeout=120)
        try:
            corpus.assert_refused(up.returncode, up.stdout, up.stderr, f"lab up {case.name}")
            assert not Lab(name).exists(), f"lab up {case.name} made a lab"
        finally:
            Lab(name).down()
    diff = differences(before, capture(lab))
    assert not diff, "\n".join(diff[:40])
    record("inputs.real_processes_refused", 2 * len(picked))
