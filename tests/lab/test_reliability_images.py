"""Image builds that go wrong: the disk fills up (during mmdebstrap, and after it, while
fjord finishes the tree), and the mirror goes away half-way. Each time: exit 1 with a
message that says what happened, no traceback, no image in the cache, no half-built
tree left, and the space given back.

The cache is a small tmpfs mounted in a private mount namespace made for the test
(`unshare --mount`), never in the machine's; mmdebstrap is a stand-in on PATH that
behaves like the real one up to the fault (no network needed). A real mmdebstrap
against an unreachable mirror is tests/lab/test_images.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faults import EXAMPLE, record

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="needs root and unshare"),
]

# A stand-in for mmdebstrap: `--version`, then the target directory is the argument
# after the suite. MODE: disk-full (writes until ENOSPC, fails as apt does),
# fill-then-succeed (a plausible tree, then the disk filled, exit 0), mirror-lost
# (progress, then apt's fetch error).
FAKE = textwrap.dedent("""\
    #!{python}
    import os, sys
    if "--version" in sys.argv:
        print("mmdebstrap 1.3.5"); sys.exit(0)
    mode = os.environ["FAKE_MODE"]
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    target = args[1]
    os.makedirs(target + "/etc/ssh", exist_ok=True)
    print("I: automatically chosen format: directory", file=sys.stderr, flush=True)
    print("I: running apt-get update...", file=sys.stderr, flush=True)
    if mode == "mirror-lost":
        print("Get:1 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 [2757 kB]",
              file=sys.stderr, flush=True)
        print("E: Failed to fetch http://deb.debian.org/debian/pool/main/s/systemd/"
              "systemd_252.39-1~deb12u2_amd64.deb  Could not connect to deb.debian.org:80 "
              "(151.101.2.132), connection timed out", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode == "disk-full":  # (the other mode leaves fjord nothing to delete)
        for name in ("etc/hostname", "etc/machine-id", "etc/ssh/ssh_host_ed25519_key"):
            open(os.path.join(target, name), "w").write("x\\n")
    error = None
    for i, chunk in enumerate((65536, 4096, 1)):  # to the last byte
        try:
            with open(os.path.join(target, f"filler{{i}}"), "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\\0" * chunk)
        except OSError as exc:
            error = error or exc
    if mode == "disk-full":
        print(f"E: Write error - write ({{error.errno}}: {{error.strerror}})",
              file=sys.stderr, flush=True)
        print("E: mmdebstrap failed", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(0)
""")

# Inside the private mount namespace: a 16 MiB tmpfs as the image cache, then the real
# `fjord image build` (its own process, as an operator runs it).
RUNNER = textwrap.dedent("""
    import json, os, shutil, subprocess, sys
    cache, config = sys.argv[1], sys.argv[2]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "fjord-test", cache], check=True)
    out = subprocess.run([sys.executable, "-m", "fjord", "image", "build", "-c", config],
                         capture_output=True, text=True, timeout=300)
    usage = shutil.disk_usage(cache)
    print(json.dumps({"code": out.returncode, "stdout": out.stdout, "stderr": out.stderr,
                      "left": sorted(os.listdir(cache)), "used": usage.used,
                      "total": usage.total}))
""")


def build(tmp_path: Path, mode: str) -> dict[str, object]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "mmdebstrap"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_MODE": mode,
           "FJORD_IMAGES_DIR": str(cache), "FJORD_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                          sys.executable, "-c", RUNNER, str(cache), EXAMPLE],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    # the tmpfs lived in the private namespace only
    assert not any(str(cache) in line for line in Path("/proc/self/mounts").read_text()
                   .splitlines())
    return result


def assert_nothing_left(result: dict[str, object], what: str) -> None:
    assert result["code"] == 1, f"{what}: exit {result['code']}\n{result['stderr']}"
    stderr = str(result["stderr"])
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    assert "fjord: error:" in stderr, stderr
    # nothing but the lock directory: no image, no half-built tree
    assert [n for n in result["left"] if n != ".locks"] == [], f"{what}: {result['left']}"
    assert int(result["used"]) < 1 << 20, f"{what}: {result['used']} bytes still used"


def test_disk_full_while_mmdebstrap_runs(tmp_path: Path) -> None:
    result = build(tmp_path, "disk-full")
    assert_nothing_left(result, "disk full during mmdebstrap")
    assert "No space left on device" in str(result["stderr"]), result["stderr"]
    record("faults.image_build", detail="disk full during mmdebstrap")


def test_disk_full_after_mmdebstrap(tmp_path: Path) -> None:
    """mmdebstrap finished, and the disk is full while fjord finishes the image."""
    result = build(tmp_path, "fill-then-succeed")
    assert_nothing_left(result, "disk full after mmdebstrap")
    assert "No space left on device" in str(result["stderr"]), result["stderr"]
    record("faults.image_build", detail="disk full after mmdebstrap")


def test_mirror_lost_half_way(tmp_path: Path) -> None:
    result = build(tmp_path, "mirror-lost")
    assert_nothing_left(result, "mirror lost half-way")
    assert "cannot download from the Debian mirror" in str(result["stderr"])
    assert "host.apt.mirror" in str(result["stderr"])
    record("faults.image_build", detail="mirror lost half-way")
