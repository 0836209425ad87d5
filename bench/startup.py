#!/usr/bin/env python3
"""How fast fjord answers: `fjord --help`, and `fjord validate` / `fjord plan` of a
configuration with 100 containers (no root needed).

    .venv/bin/python bench/startup.py [-n 10] [--containers 100] [--as-root] [--check]

Prints JSON on stdout: the min, median and max wall time of each command over N runs
(each a fresh process, as a user would run it), the same pipeline in this process
(read + check + allocate, without the interpreter start), the import time of the heavy
modules, and the targets (--help 0.3 s; validate + plan of 100 containers 1 s, medians).
The configuration is generated into a temporary directory with an empty state
directory, twice: with `host.packages` that are installed (every plan of a host after
its first apply: `plan` only asks dpkg), and with one that is not (a host's first plan:
`plan` also asks APT to simulate the installation, so that an unknown or uninstallable
package stops the plan before anything changes; that simulation reads all of APT's
package lists, about a second, whatever the number of containers). Run as root, the
commands run as `nobody` (through setpriv) so that `plan` takes the path of an
unprivileged user, reading what it can; --as-root keeps root.
With --check, exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"help": 0.3, "validate_plus_plan": 1.0}
# A package the host's first plan must have APT simulate; any that is not installed.
MISSING_PACKAGE = "emacs-nox"
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df "
           "bench@example.net")


def generate_config(n: int, packages: list[str] | None = None) -> str:
    """examples/lab.yaml's host with n containers: a tenth with explicit addresses, a
    fifth with a port forward, a few with their own settings. ``packages``: the host's
    packages instead of the example's."""
    host = (REPO / "examples" / "lab.yaml").read_text().split("\ncontainers:")[0]
    if packages is not None:
        host = re.sub(r"\n  packages: \[.*\]\n", f"\n  packages: [{', '.join(packages)}]\n",
                      host)
    host = re.sub(r"\n  forwards:\n(    - .*\n)+", "\n", host + "\n")
    forwards = [f"    - {{protocol: tcp, port: {10000 + i}, container: c{i:03d}, to_port: 22}}"
                for i in range(0, n, 5)]
    lines = [host.rstrip("\n").replace("  dns:", "  capacity: {memory: 256GiB, cpus: 64}\n"
                                       "  dns:", 1)]
    if forwards:
        lines[0] = lines[0].replace("  packages:", "  forwards:\n" + "\n".join(forwards)
                                    + "\n  packages:", 1)
    lines += ["  ssh_keys:", f"    - {SSH_KEY}", "", "containers:"]
    for i in range(n):
        lines.append(f"  c{i:03d}:")
        if i % 10 == 0:
            lines.append(f"    ipv4: 10.1.{i // 200}.{10 + i % 200}")
            lines.append(f"    ipv6: 2001:db8:151:7307:2::{i + 1:x}")
        if i % 7 == 0:
            lines += ["    memory: 1GiB", "    packages: [nginx, curl]"]
        if i % 13 == 0:
            lines += ["    puppet: {server: tromso.example.net}"]
        if lines[-1].endswith(":"):
            lines[-1] += " {}"
    return "\n".join(lines) + "\n"


def summary(runs: list[float]) -> dict[str, Any]:
    return {"min": round(min(runs), 4), "median": round(statistics.median(runs), 4),
            "max": round(max(runs), 4), "runs": [round(r, 4) for r in runs]}


def fjord_command() -> list[str]:
    script = Path(sys.executable).parent / "fjord"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fjord"]


def timed(argv: list[str], env: dict[str, str], runs: int,
          ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=120)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            sys.exit(f"bench: {' '.join(argv)} failed (exit {proc.returncode}):\n"
                     f"{proc.stderr}")
    return summary(times)


def in_process(path: str, runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "src"))
    from fjord.config.desired import resolve
    from fjord.config.loader import read
    from fjord.config.validate import check

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        doc = read(path)
        resolve(doc, check(doc))
        times.append(time.perf_counter() - start)
    return summary(times)


def import_times(env: dict[str, str]) -> dict[str, float]:
    """Cumulative import time (ms) of the modules that weigh, from -X importtime."""
    watched = ("click", "rich", "yaml", "pydantic", "fjord.config.models",
               "fjord.config.desired", "fjord.cli", "pyroute2", "libvirt",
               "ovsdbapp.backend.ovs_idl.connection")
    # what `plan` and `apply` load besides: netlink, libvirt, OVSDB
    code = ("import fjord.cli, fjord.config.desired, pyroute2, libvirt, "
            "ovsdbapp.backend.ovs_idl.connection")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    out: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in watched and parts[1].isdigit():
            out[parts[2]] = round(int(parts[1]) / 1000, 1)
    return out


def measure(runs: int = 10, containers: int = 100, as_root: bool = False) -> dict[str, Any]:
    """The report main() prints (for bench/run)."""
    tmp = Path(tempfile.mkdtemp(prefix="fjord-bench-"))
    try:
        tmp.chmod(0o755)
        config = tmp / "fjord.yaml"
        config.write_text(generate_config(containers, packages=[]))
        config.chmod(0o644)
        fresh = tmp / "fjord-fresh-host.yaml"
        fresh.write_text(generate_config(containers, packages=[MISSING_PACKAGE]))
        fresh.chmod(0o644)
        env = {**os.environ, "FJORD_STATE_DIR": str(tmp / "state"), "NO_COLOR": "1"}
        env.pop("FJORD_CONFIG", None)
        prefix: list[str] = []
        user = "root" if os.geteuid() == 0 else "user"
        if os.geteuid() == 0 and not as_root and shutil.which("setpriv"):
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            user = "nobody"
        fjord = [*prefix, *fjord_command()]
        # without root, plan reads what it can and says so: exit 3, "some state could not
        # be read" (docs/operations.md, Exit codes); the time is still a plan's
        plan_ok = (0,) if user == "root" else (0, 3)
        n = containers
        result: dict[str, Any] = {
            "runs": runs,
            "containers": n,
            "user": user,
            "python": sys.version.split()[0],
            "commands": {
                "help": timed([*fjord, "--help"], env, runs),
                f"validate_{n}": timed([*fjord, "validate", "-c", str(config)], env, runs),
                f"plan_{n}": timed([*fjord, "plan", "-c", str(config)], env, runs,
                                             plan_ok),
                f"plan_{n}_packages_missing": timed([*fjord, "plan", "-c", str(fresh)], env,
                                                    runs, plan_ok),
            },
            "missing_package": MISSING_PACKAGE,
            "in_process": {f"read_check_allocate_{n}": in_process(str(config), runs)},
            "imports_ms": import_times(env),
        }
        cmds = result["commands"]
        both = cmds[f"validate_{n}"]["median"] + cmds[f"plan_{n}"]["median"]
        result["targets"] = {
            "help": {"target": TARGETS["help"], "median": cmds["help"]["median"],
                     "ok": cmds["help"]["median"] <= TARGETS["help"]},
            f"validate_plus_plan_{n}": {"target": TARGETS["validate_plus_plan"],
                                        "median": round(both, 4),
                                        "ok": both <= TARGETS["validate_plus_plan"]},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--as-root", action="store_true",
                        help="when root, run the commands as root (default: as nobody)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    result = measure(args.runs, args.containers, args.as_root)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    missed = [k for k, v in result["targets"].items() if not v["ok"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
