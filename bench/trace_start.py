#!/usr/bin/env python3
"""Where the time of one container's launch goes: a timeline of every program the
launch runs, on the machine, from `fjord apply` to the first ping answered.

    sudo .venv/bin/python bench/trace_start.py [--rounds N] [--privileged]

In one fresh lab (removed at the end), as bench/containers.py does: the host applied
with a warm-up container (destroyed), then N rounds of `fjord apply` adding one overlay
container, each traced with `perf record` of the scheduler's exec and exit events,
machine-wide (other work on the machine shows up too: run it idle). Prints, per round,
each program run during the launch with its start and end in milliseconds after the
apply began (libvirt's hook, ovs-vsctl, the controller, the container's fjord-init and
perl loader, its systemd...), then the seconds until ping. Not a figure with a target:
the figures are bench/containers.py's; this says where they come from.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import containers
from common import REPO, compiled, log, unique_name

EVENT = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)\s+\[\d+\]\s+(?P<t>[\d.]+):\s+"
                   r"sched:sched_process_(?P<what>exec|exit):\s+(?P<rest>.*)$")


def timeline(script: str) -> list[tuple[float, float | None, int, str]]:
    """(start, end or None, pid, program) of each exec in `perf script`'s output."""
    started: dict[int, tuple[float, str]] = {}
    out: list[tuple[float, float | None, int, str]] = []
    for line in script.splitlines():
        m = EVENT.match(line)
        if not m:
            continue
        t, pid = float(m["t"]), int(m["pid"])
        if m["what"] == "exec":
            if pid in started:  # exec again (a shell exec'ing its last command)
                s, prog = started.pop(pid)
                out.append((s, t, pid, prog))
            name = re.search(r"filename=(\S+)", m["rest"])
            started[pid] = (t, name[1] if name else m["comm"])
        elif "group_dead=true" in m["rest"] or "group_dead" not in m["rest"]:
            if pid in started:
                s, prog = started.pop(pid)
                out.append((s, t, pid, prog))
    out += [(s, None, pid, prog) for pid, (s, prog) in started.items()]
    return sorted(out)


def trace_round(b: containers.Bench, work: Path, n: int) -> None:
    fc = b.containers(f"tr{n}x", 1)
    data = work / f"perf-{n}.data"
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "sched:sched_process_exec",
                             "-e", "sched:sched_process_exit", "-o", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf's own start
    try:
        got = b.fjord_apply("overlay", fc)
        time.sleep(0.5)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    script = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True,
                            text=True, check=False).stdout
    events = timeline(script)
    apply_start = next((s for s, _, _, prog in events
                        if prog.endswith("/fjord") or "fjord" in Path(prog).name), None)
    t0 = apply_start if apply_start is not None else (events[0][0] if events else 0.0)
    print(f"\n== round {n}: until ping {got.get('seconds')} s "
          f"(apply's own run {got.get('commands', 0):.3f} s)")
    for s, e, pid, prog in events:
        if s < t0 - 0.05:
            continue
        end = f"{(e - t0) * 1000:7.0f}" if e is not None else "      …"
        took = f"{(e - s) * 1000:6.0f}" if e is not None else "     ?"
        print(f"{(s - t0) * 1000:7.0f} {end} {took} ms  {pid:>7}  {prog}")
    b.destroy_fjord(fc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--privileged", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (a lab)", file=sys.stderr)
        return 2
    containers.PRIVILEGED = args.privileged
    compiled()
    from fjord.lab import Lab

    work = Path(tempfile.mkdtemp(prefix="fjord-trace-"))
    work.chmod(0o755)
    lab = Lab(unique_name("trace-"))
    try:
        image, _ = containers.ensure_image(work)
        log(f"trace: lab {lab.name}")
        lab.up(config=str(REPO / "examples" / "lab.yaml"), owner=os.getpid())
        b = containers.Bench(lab, work, image, work / "unused.tar")
        warm = b.containers("wt", 1)
        b.fjord_apply("overlay", warm, job="warm_fjord")
        b.destroy_fjord(warm)
        for n in range(1, args.rounds + 1):
            trace_round(b, work, n)
    finally:
        lab.down()
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
