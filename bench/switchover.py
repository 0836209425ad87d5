#!/usr/bin/env python3
"""Connectivity lost while fjord moves the uplink into br-ex, and while it rolls back.

    .venv/bin/python bench/switchover.py [-n 3] [--interval 0.01]

For each repetition: a fresh lab; the upstream pings the server's public IPv4 every
INTERVAL seconds while `fjord apply --only network` runs (switchover), then, in another
fresh lab, while an apply with a wrong gateway fails verification and rolls back.
Prints JSON: lost replies per run (min, median, max) for each, with the interval.
Targets: none lost at 100 ms, at most 2 at 10 ms (switchover). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fjord.lab import Lab  # noqa: E402

EXAMPLE = REPO / "examples" / "lab.yaml"
PUBLIC4 = "192.0.2.5"


def lost_during(lab: Lab, config: Path, interval: float) -> tuple[int, int, bool]:
    """(sent, lost, apply succeeded) for pings during one apply."""
    counts, ok = lost_during_all(lab, config, [interval])
    return (*counts[interval], ok)


def lost_during_all(lab: Lab, config: Path, intervals: Sequence[float]
                    ) -> tuple[dict[float, tuple[int, int]], bool]:
    """({interval: (sent, lost)}, apply succeeded): one ping per interval, all running
    at once during the same apply."""
    pingers = {interval: subprocess.Popen(
        lab.upstream_argv(["ping", "-n", "-q", "-i", str(interval), "-w", "30", PUBLIC4]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for interval in intervals}
    time.sleep(1.0)  # a steady state before
    apply = subprocess.run(lab.exec_argv([
        sys.executable, "-m", "fjord", "apply", "-c", str(config), "--yes",
        "--only", "host", "--only", "network"]), capture_output=True, text=True)
    time.sleep(1.0)  # and after
    counts = {}
    for interval, pinger in pingers.items():
        pinger.send_signal(2)
        out, _ = pinger.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise RuntimeError(f"no ping summary: {out}")
        sent, received = int(m.group(1)), int(m.group(2))
        counts[interval] = (sent, max(0, sent - received))
    return counts, apply.returncode == 0


def stats(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(n: int = 3, intervals: Sequence[float] = (0.01, 0.1),
            together: bool = False) -> dict[str, object]:
    """The report main() prints (for bench/run): fresh labs with unique names. With
    ``together``, every interval's ping runs during the same apply (half the labs)."""
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "badgw.yaml"
        bad.write_text(EXAMPLE.read_text().replace("gateway: 192.0.2.1\n",
                                                   "gateway: 192.0.2.30\n"))
        bad.chmod(0o644)
        report: dict[str, object] = {}
        batches = [list(intervals)] if together else [[i] for i in intervals]
        for batch in batches:
            for what, config, should_succeed in (("switchover", EXAMPLE, True),
                                                 ("rollback", bad, False)):
                lost: dict[float, list[int]] = {i: [] for i in batch}
                for i in range(n):
                    lab = Lab(f"bsw{i}-{secrets.token_hex(3)}")
                    try:
                        lab.up(config=str(EXAMPLE), owner=os.getpid())
                        counts, ok = lost_during_all(lab, config, batch)
                        if ok != should_succeed:
                            raise RuntimeError(f"{what}: apply {'failed' if ok else 'passed'}")
                        for interval, (_, n_lost) in counts.items():
                            lost[interval].append(n_lost)
                    finally:
                        lab.down()
                for interval, runs in lost.items():
                    key = f"{what}_lost_at_{int(interval * 1000)}ms"
                    report[key] = {**stats(runs), "unit": "replies", "runs": runs,
                                   "interval_s": interval}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--interval", type=float, action="append",
                        help="ping interval in seconds (repeatable; default 0.01 and 0.1)")
    args = parser.parse_args()
    report = measure(args.n, args.interval or [0.01, 0.1])
    print(json.dumps(report, indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
