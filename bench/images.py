#!/usr/bin/env python3
"""How fast images and container roots are made, and what a container costs on disk.

    sudo .venv/bin/python bench/images.py [--cold 1] [-n 10] [--copies 3] [--cache DIR] [--check]

Prints JSON on stdout, min/median/max of each measure:

- cold_build: a bookworm minbase image built with mmdebstrap into an empty cache
  (``--cold`` builds, each into a fresh temporary cache; needs deb.debian.org);
- warm_hit: finding that image in the cache (in this process, and as a fresh process);
- overlay_create: preparing an overlay root and customising it, per container;
- copy_create: the same with a full copy;
- disk_overlay / disk_copy: bytes each container costs beyond the shared image.

Roots are mounted in a private mount namespace (``unshare --mount --propagation
private``) that vanishes with the measuring process; nothing touches the machine's
mounts. Everything is made in a temporary directory and removed afterwards. ``--cache``
reuses an image cache (and skips the cold build when it holds the image). Targets (issue
6): cold build 60 s, warm hit 0.2 s, overlay container 10 MB. With --check, exits 1 when
one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fjord.containers.image import ImageCache, make_spec  # noqa: E402

MIRROR = "http://deb.debian.org/debian"
TARGETS = {"cold_build": 60.0, "warm_hit": 0.2, "disk_overlay": 10 * 1024 * 1024}
CONFIG = """\
version: 1
host:
  fqdn: oslo.example.net
  ipv4: {address: 192.0.2.5/27, gateway: 192.0.2.1}
  ipv6: {address: "2001:db8:151:7307::2/64", mode: routed}
  dns: [192.0.2.53]
containers:
"""

# Runs in the private mount namespace: makes the containers, prints their measures.
ROOTS = """
import json, sys, time
from pathlib import Path
from fjord.config.desired import load
from fjord.containers import customize, rootfs
from fjord.containers.image import ImageCache

args = json.loads(sys.argv[1])
state = Path(args["state"])
image = ImageCache(Path(args["cache"])).get(args["key"])
desired = load(args["config"])
out = []
for c in desired.containers:
    if c.rootfs != args["mode"]:
        continue
    start = time.perf_counter()
    layout = rootfs.prepare(c.name, image, c.rootfs, state / "containers")
    customize.customize(layout.rootfs, c, desired)
    seconds = time.perf_counter() - start
    out.append({"seconds": seconds, "disk": rootfs.disk_usage(layout)})
print(json.dumps(out))
"""


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4),
            "max": round(max(values), 4), "n": len(values),
            "runs": [round(v, 4) for v in values]}


def cold_builds(n: int, work: Path) -> tuple[list[float], ImageCache | None]:
    times: list[float] = []
    cache = None
    for i in range(n):
        cache = ImageCache(work / f"cold{i}" / "images")
        start = time.monotonic()
        cache.build(make_spec(suite="bookworm", mirror=MIRROR))
        times.append(time.monotonic() - start)
        print(f"cold build {i + 1}/{n}: {times[-1]:.1f} s", file=sys.stderr)
    return times, cache


def warm_hits(cache: ImageCache, n: int) -> tuple[list[float], list[float]]:
    spec = make_spec(suite="bookworm", mirror=MIRROR)
    inproc = []
    for _ in range(n):
        start = time.perf_counter()
        _, built = ImageCache(cache.root).ensure(spec)
        inproc.append(time.perf_counter() - start)
        assert not built
    code = ("import sys, time; t = time.perf_counter(); "
            "from fjord.containers.image import ImageCache, make_spec; "
            "from pathlib import Path; "
            f"img, built = ImageCache(Path({str(cache.root)!r})).ensure("
            f"make_spec(suite='bookworm', mirror={MIRROR!r})); "
            "assert not built; print(time.perf_counter() - t)")
    process = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        process.append(time.perf_counter() - start)
    return inproc, process


def roots(cache: ImageCache, key: str, mode: str, n: int, work: Path) -> list[dict[str, Any]]:
    config = work / f"{mode}.yaml"
    config.write_text(CONFIG + "".join(f"  {mode[0]}{i:03d}: {{rootfs: {mode}}}\n"
                                       for i in range(n)))
    args = {"state": str(work / f"state-{mode}"), "cache": str(cache.root), "key": key,
            "config": str(config), "mode": mode}
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", ROOTS,
         json.dumps(args)], check=True, capture_output=True, text=True, timeout=3600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    result: list[dict[str, Any]] = json.loads(out.stdout.splitlines()[-1])
    return result


def measure(cold: int = 1, n: int = 10, copies: int = 3,
            cache_dir: Path | None = None) -> dict[str, Any]:
    """The report main() prints (for bench/run). Needs root and mmdebstrap."""
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        raise RuntimeError("needs root and mmdebstrap (builds, mounts in a private namespace)")
    work = Path(tempfile.mkdtemp(prefix="fjord-bench-images-"))
    try:
        spec = make_spec(suite="bookworm", mirror=MIRROR)
        cache = ImageCache(cache_dir) if cache_dir else None
        cold_times: list[float] = []
        if cold:
            cold_times, built = cold_builds(cold, work)
            if cache is None or cache.get(spec.key) is None:
                cache = built
        elif cache is None or cache.get(spec.key) is None:
            raise RuntimeError("--cold 0 needs --cache DIR holding the bookworm image")
        assert cache is not None
        image = cache.get(spec.key)
        assert image is not None
        hit, hit_process = warm_hits(cache, n)
        overlay = roots(cache, spec.key, "overlay", n, work)
        copy = roots(cache, spec.key, "copy", copies, work)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)

    return {
        "image": {"key": spec.key, "size": image.size},
        "cold_build": summary(cold_times),
        "warm_hit": summary(hit),
        "warm_hit_fresh_process": summary(hit_process),
        "overlay_create": summary([r["seconds"] for r in overlay]),
        "copy_create": summary([r["seconds"] for r in copy]),
        "disk_overlay": summary([r["disk"] for r in overlay]),
        "disk_copy": summary([r["disk"] for r in copy]),
        "targets": TARGETS,
        "load": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=1, help="cold builds (default 1)")
    parser.add_argument("-n", type=int, default=10, help="warm hits and overlay containers")
    parser.add_argument("--copies", type=int, default=3, help="copy containers (default 3)")
    parser.add_argument("--cache", type=Path, help="an image cache to reuse")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    opts = parser.parse_args()
    try:
        report = measure(opts.cold, opts.n, opts.copies, opts.cache)
    except RuntimeError as exc:
        parser.error(str(exc))
    print(json.dumps(report, indent=2))
    missed = [k for k, limit in TARGETS.items()
              if report[k] is not None and report[k]["median"] > limit]
    if missed:
        print(f"missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if opts.check and missed else 0

if __name__ == "__main__":
    sys.exit(main())
