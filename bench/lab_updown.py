#!/usr/bin/env python3
"""How long `fjord lab up` and `fjord lab down` take (root only).

    .venv/bin/python bench/lab_updown.py [-n 5] [--provider bridged] [--via cli|api|both]

Prints JSON on stdout: for each way of calling (``cli``: the `fjord lab` command, with
its interpreter start; ``api``: fjord.lab.Lab in this process), the median, minimum
and maximum seconds of `up` and `down` over N fresh labs, and the goals (up 3 s,
down 2 s). Each repetition creates a fresh lab (unique name) and removes it; a
failure removes what it made and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fjord.lab import Lab  # noqa: E402

CONFIG = str(REPO / "examples" / "lab.yaml")
GOALS = {"up": 3.0, "down": 2.0}


def summary(runs: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(runs), 3), "min": round(min(runs), 3),
            "max": round(max(runs), 3), "runs": [round(r, 3) for r in runs]}


def timed_cli(*args: str) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "fjord", "lab", *args], check=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)
    return time.monotonic() - start


def one_cli(name: str, provider: str) -> tuple[float, float]:
    try:
        up = timed_cli("up", "--name", name, "--provider", provider, "-c", CONFIG)
    finally:
        down = timed_cli("down", "--name", name)
    return up, down


def one_api(name: str, provider: str) -> tuple[float, float]:
    lab = Lab(name)
    try:
        start = time.monotonic()
        lab.up(config=CONFIG, provider=provider)
        up = time.monotonic() - start
    finally:
        start = time.monotonic()
        lab.down()
        down = time.monotonic() - start
    return up, down


def measure(n: int = 5, provider: str = "bridged", via: str = "both") -> dict[str, Any]:
    """The report main() prints (for bench/run). Needs root."""
    ways = {"cli": one_cli, "api": one_api}
    chosen = list(ways) if via == "both" else [via]
    report: dict[str, Any] = {"n": n, "provider": provider, "goal_seconds": GOALS,
                              "cpus": os.cpu_count()}
    for way in chosen:
        ups, downs = [], []
        for _ in range(n):
            up, down = ways[way](f"bench{secrets.token_hex(3)}", provider)
            ups.append(up)
            downs.append(down)
        report[way] = {"up": summary(ups), "down": summary(downs)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--provider", default="bridged", choices=("bridged", "routed", "onlink"))
    parser.add_argument("--via", default="both", choices=("cli", "api", "both"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/lab_updown.py needs root", file=sys.stderr)
        return 2
    report = measure(args.n, args.provider, args.via)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
