#!/usr/bin/env python3
"""How long `fjord apply` takes on a converged server with 20 containers (a no-op).

    sudo .venv/bin/python bench/noop_apply.py [-n 10] [--containers 20]

In a fresh lab (removed at the end, failed or not): `fjord apply` of examples/lab.yaml's
host with N overlay containers (the image comes from the labs' shared cache, built on
the machine first if missing), a second apply that must change nothing, then N timed
runs of `fjord apply -c CFG --yes --json` on the server, each of which must print
``"changes": []``. The runs are timed on the server itself (bench/common.py time), so
the figure is what a user on the server waits for, without entering the lab.

Prints JSON: the runs, and the figure against the target (1.5 s, median). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    REPO,
    containers_that_fit,
    figure,
    fjord_argv,
    lab_host_config,
    last_json,
    log,
    tail,
    unavailable,
    unique_name,
)

TARGET = 1.5


def config_text(n: int) -> str:
    lines = [lab_host_config(), "containers:"]
    lines += [f"  n{i:03d}: {{ipv4: 10.1.3.{10 + i}, rootfs: overlay}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def in_lab_times(lab: Any, argv: list[str], n: int) -> dict[str, Any]:
    proc = subprocess.run(
        lab.exec_argv([sys.executable, str(BENCH / "common.py"), "time", "-n", str(n),
                       "--", *argv]),
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"timing in the lab: exit {proc.returncode}: {tail(proc.stderr)}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def changes(stdout: str) -> int | None:
    try:
        return len(last_json(stdout)["changes"])
    except (ValueError, KeyError, TypeError):
        return None


def measure(n: int = 10, containers: int = 20) -> dict[str, Any]:
    """{"noop_apply_20": figure} and the raw runs."""
    from fjord.lab import Lab

    if os.geteuid() != 0:
        raise RuntimeError("needs root (labs)")
    key = f"noop_apply_{containers}"
    wanted = containers
    containers, short = containers_that_fit(wanted)
    if containers == 0:
        return {"figures": {key: unavailable("s", TARGET, f"no container fits: {short}")},
                "raw": {}}
    work = Path(tempfile.mkdtemp(prefix="fjord-bench-noop-"))
    work.chmod(0o755)
    config = work / "fjord.yaml"
    config.write_text(config_text(containers))
    config.chmod(0o644)
    apply = [*fjord_argv(), "apply", "-c", str(config), "--yes", "--json"]
    lab = Lab(unique_name("bench-noop-"))
    try:
        from fjord.lab.names import labs_dir

        cache = labs_dir() / ".cache" / "fjord" / "images"
        log("noop apply: image")
        subprocess.run([*fjord_argv(), "image", "build", "-c", str(config)], check=True,
                       capture_output=True, timeout=1800, stdin=subprocess.DEVNULL,
                       env={**os.environ, "FJORD_IMAGES_DIR": str(cache)})
        log(f"noop apply: lab {lab.name}, {containers} containers")
        lab.up(config=str(REPO / "examples" / "lab.yaml"), owner=os.getpid())
        converge = in_lab_times(lab, apply, 2)   # converge, then it must change nothing
        first_error = ""
        if converge["returncodes"][0] != 0:
            # once more: a first apply may stumble on a daemon it restarts
            first_error = converge["stderrs"][0]
            log(f"noop apply: the first apply failed, once more: {first_error}")
            converge = in_lab_times(lab, apply, 2)
        if any(converge["returncodes"]):
            raise RuntimeError(f"fjord apply failed: {converge['stderrs']}")
        settle = changes(converge["stdouts"][1])
        log(f"noop apply: converged in {converge['runs'][0]:.1f} s, then "
            f"{changes(converge['stdouts'][1])} changes; {n} timed runs")
        timed = in_lab_times(lab, apply, n)
    finally:
        log(f"noop apply: lab {lab.name} down")
        try:
            lab.down()
        finally:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    counts = [changes(out) for out in timed["stdouts"]]
    good = [t for t, c, rc in zip(timed["runs"], counts, timed["returncodes"], strict=True)
            if c == 0 and rc == 0]
    note = (f"fjord apply --yes --json on the server of a lab converged with {containers} "
            f"running overlay containers (first apply {converge['runs'][0]:.1f} s)")
    if first_error:
        note += f"; the first apply failed and was run again ({first_error})"
    if settle:
        note += f"; the apply after the converging one still made {settle} change(s)"
    if len(good) < len(timed["runs"]):
        note += (f"; {len(timed['runs']) - len(good)} of {len(timed['runs'])} runs were not "
                 f"no-ops (changes {counts}, exit {timed['returncodes']}) and are left out")
    result = figure(good, "s", TARGET, note=note)
    if containers < wanted:
        # Not the situation the target is about: no verdict, and the note says why.
        result["note"] = (f"measured with {containers} containers, not {wanted}: {short}; "
                          + note)
        result["met"] = None
    result["containers"] = containers
    return {"figures": {key: result},
            "raw": {"converge": converge["runs"], "settle_changes": settle,
                    "runs": timed["runs"], "changes": counts}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--containers", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    print(json.dumps(measure(args.n, args.containers), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
