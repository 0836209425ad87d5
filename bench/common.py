#!/usr/bin/env python3
"""Helpers shared by the benchmarks: figures (median/min/max against a target), the
machine and the versions measured, timing a command, unique lab names.

Also a tiny command, run on a lab's server by the benchmarks so that a figure does not
include the time it takes to enter the lab:

    python bench/common.py time -n 5 -- CMD...

runs CMD N times, one after the other, and prints JSON: each run's seconds, exit status,
stdout and (when it failed) the tail of its stderr.

Standard library only (it runs on a lab's server and in bench/run before anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
EXAMPLE = REPO / "examples" / "lab.yaml"
# A public key for the containers' authorized_keys (nobody holds the private half).
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df "
           "bench@example.net")


_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress, on stderr (stdout carries the JSON), with the seconds since start."""
    print(f"bench {time.monotonic() - _STARTED:6.1f}s: {message}", file=sys.stderr,
          flush=True)


# --- figures ---------------------------------------------------------------------------


def figure(values: Iterable[float], unit: str, target: float | None = None, *,
           note: str = "", met_on: str = "median", digits: int = 3) -> dict[str, Any]:
    """One figure: median, min, max of ``values`` and whether ``target`` is met.

    ``met_on`` says which statistic must be at most the target: the median (default), or
    ``max`` (every run) for counts that must hold each time (lost pings). No values:
    the figure is unavailable (``met`` null) and ``note`` says why."""
    vals = [float(v) for v in values]
    if not vals:
        return unavailable(unit, target, note or "no measurement")
    med = statistics.median(vals)
    checked = max(vals) if met_on == "max" else med
    return {
        "median": round(med, digits), "min": round(min(vals), digits),
        "max": round(max(vals), digits), "unit": unit, "n": len(vals), "target": target,
        "met": None if target is None else bool(checked <= target + 1e-12),
        "note": note,
    }


def unavailable(unit: str, target: float | None, note: str) -> dict[str, Any]:
    return {"median": None, "min": None, "max": None, "unit": unit, "n": 0,
            "target": target, "met": None, "note": note}


# --- the machine and the versions ------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _first_line(argv: Sequence[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def fjord_version() -> str:
    """The package version and the working tree it ran from (commit, dirty or not)."""
    try:
        from importlib.metadata import version

        package = version("fjord")
    except Exception:
        package = "not installed"
    git = _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty",
                       "--abbrev=12"])
    return f"{package} ({git})" if git else package


def versions() -> dict[str, str | None]:
    return {
        "fjord": fjord_version(),
        "ovs": _first_line(["ovs-vswitchd", "--version"]),
        "libvirt": _first_line(["libvirtd", "--version"]),
        "mmdebstrap": _first_line(["mmdebstrap", "--version"]),
        "python": sys.version.split()[0],
    }


# --- running things --------------------------------------------------------------------


def fjord_argv() -> list[str]:
    """fjord as a user runs it: the venv's script (else python -m fjord)."""
    script = Path(sys.executable).parent / "fjord"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fjord"]


def timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          timeout: float = 600, check: bool = True,
          cwd: str | Path | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, the finished process) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else dict(env), cwd=cwd,
                          stdin=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): "
                           f"{tail(proc.stderr or proc.stdout)}")
    return seconds, proc


def tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def last_json(text: str) -> Any:
    """The JSON document a command printed last (a line of its own, or pretty-printed)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
    raise ValueError(f"no JSON in output: {tail(text)}")


def unique_name(prefix: str) -> str:
    """A lab name nobody else uses (lab names: lowercase letters, digits, hyphens)."""
    return f"{prefix}{secrets.token_hex(3)}"


def lab_host_config() -> str:
    """examples/lab.yaml without its containers and port forwards (they name a container
    the benchmarks do not make), with an SSH key for every container and bookworm as
    their suite: the head of a configuration to which a benchmark appends its own
    ``containers:``. (Bookworm: the figures of docs/performance.md are its; and the
    hand-made baseline boots systemd as its own init, which trixie's refuses on a
    cgroup v1 machine.)"""
    head = EXAMPLE.read_text().split("\ncontainers:")[0]
    head = re.sub(r"\n  forwards:\n(    - .*\n)+", "\n", head + "\n")
    return head.rstrip("\n") + f"\n  suite: bookworm\n  ssh_keys:\n    - {SSH_KEY}\n"


def compiled() -> None:
    """fjord's bytecode written, as an installed fjord has it (pip compiles at install):
    a checkout run with PYTHONDONTWRITEBYTECODE, or edited since its last run, would
    compile every changed module again in each fjord process (the CLI and the libvirt
    hook's), about 0.1 s each, which no server pays."""
    import compileall

    compileall.compile_dir(str(REPO / "src" / "fjord"), quiet=1)


# --- a machine-wide limit that caps how many containers can run -------------------------

# Each booted container's systemd holds 5 inotify instances and its getty one; all of
# them count against the machine's fs.inotify.max_user_instances for root (128 on
# Debian), shared by every lab on the machine. A container that cannot get one dies at
# once (fjord: "has no init process").
INOTIFY_PER_CONTAINER = 6   # measured: 5 (systemd) + 1 (agetty)
INOTIFY_RESERVE = 16   # left for the machine and other labs' containers


def inotify_instances() -> tuple[int, int]:
    """(fs.inotify.max_user_instances, instances root processes hold now)."""
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    used = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != 0:
                continue
            for fd in (proc / "fd").iterdir():
                try:
                    if os.readlink(fd) == "anon_inode:inotify":
                        used += 1
                except OSError:
                    continue
        except OSError:
            continue
    return limit, used


def containers_that_fit(wanted: int) -> tuple[int, str]:
    """How many more containers can boot now (at most ``wanted``), and why not more."""
    limit, used = inotify_instances()
    fit = max(0, (limit - used - INOTIFY_RESERVE) // INOTIFY_PER_CONTAINER)
    if fit >= wanted:
        return wanted, ""
    return fit, (f"the machine's fs.inotify.max_user_instances is {limit} and {used} are in "
                 f"use (other labs' containers included); a container needs about "
                 f"{INOTIFY_PER_CONTAINER}: {fit} more fit, not {wanted}")


# --- `common.py time`: timing a command where it runs (on a lab's server) ---------------


def _time_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/common.py time")
    parser.add_argument("-n", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    runs, codes, stdouts, errors = [], [], [], []
    for _ in range(args.n):
        seconds, proc = timed(command, timeout=args.timeout, check=False)
        runs.append(seconds)
        codes.append(proc.returncode)
        stdouts.append(proc.stdout)
        errors.append(tail(proc.stderr, 10) if proc.returncode else "")
    print(json.dumps({"runs": runs, "returncodes": codes, "stdouts": stdouts,
                      "stderrs": errors}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["time"]:
        sys.exit(_time_main(sys.argv[2:]))
    print(json.dumps({"machine": machine(), "versions": versions()}, indent=2))
