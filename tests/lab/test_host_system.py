"""The host system layer on a simulated server: a fresh lab plans the APT and libvirt
files and the packages, one apply converges, the second changes nothing, and the
machine running the lab is untouched (its /etc, its packages).

The layer runs inside the lab with FJORD_PACKAGE_MANAGER=simulate (the lab shares /usr
with the machine: nothing is installed) and, once fjord.lab.services exists,
FJORD_SERVICE_MANAGER=lab; until then the services are left out of the probe. It
calls fjord.host.system directly, so it does not depend on the catalogue's wiring.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fjord.state.known import host_release

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="needs root to build a lab"),
]

REPO = Path(__file__).resolve().parents[2]
FJORD = [sys.executable, "-m", "fjord"]
LAB = f"hostsys{os.getpid() % 10000}"
HAS_LAB_SERVICES = importlib.util.find_spec("fjord.lab.services") is not None

PROBE = """
import json, sys
from fjord.state.known import load   # as the command line does: the lab's release too
from fjord.engine.apply import apply
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context
from fjord.host import system

class Quiet:
    def started(self, change): pass
    def finished(self, change, seconds): pass
    def failed(self, change, error): pass

from fjord.cli import install_environment
install_environment()  # FJORD_PACKAGE_MANAGER=simulate..., read as fjord's command line does
desired = load("examples/lab.yaml")
def layer():
    out = system.resources(desired)
    if sys.argv[1] == "no-services":
        out = [r for r in out if not r.id.startswith("service ")]
    return out
ctx = Context(desired)
plan = make_plan(layer(), ctx)
done = apply(layer(), ctx, Quiet())
again = make_plan(layer(), Context(desired))
print(json.dumps({
    "plan": [c.as_json() for c in plan.changes],
    "unreadable": [u.resource for u in plan.unreadable],
    "done": [c.as_json() for c in done],
    "again": [c.as_json() for c in again.changes] + [{"unreadable": u.resource}
                                                   for u in again.unreadable],
}))
"""

WATCHED = ["/etc/apt/sources.list.d", "/etc/apt/preferences.d", "/etc/libvirt/libvirt.conf",
           "/etc/libvirt/libvirtd.conf", "/etc/default/libvirtd", "/var/lib/dpkg/status"]


def fingerprint() -> dict[str, str]:
    """The machine's files the layer would write if it escaped the lab."""
    out = {}
    for name in WATCHED:
        path = Path(name)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "-"
    return out


def fjord(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FJORD, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    up = fjord("lab", "up", "--name", LAB, "-c", "examples/lab.yaml")
    try:
        assert up.returncode == 0, up.stderr
        yield LAB
    finally:
        down = fjord("lab", "down", "--name", LAB)
        assert down.returncode == 0, down.stderr


def test_plan_apply_and_idempotence_in_the_lab(lab: str):
    before = fingerprint()
    env = ["env", "FJORD_PACKAGE_MANAGER=simulate"]
    if HAS_LAB_SERVICES:
        env.append("FJORD_SERVICE_MANAGER=lab")
    mode = "services" if HAS_LAB_SERVICES else "no-services"
    res = fjord("lab", "exec", "--name", lab, "--", *env, sys.executable, "-c", PROBE, mode)
    assert res.returncode == 0, res.stderr
    report: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])

    planned = {c["resource"] for c in report["plan"]}
    assert {"file /etc/apt/sources.list.d/fjord-debian.sources", "apt-update lists",
            "file /etc/libvirt/libvirt.conf", "file /etc/libvirt/libvirtd.conf",
            "packages host"} <= planned
    install = next(c for c in report["plan"] if c["resource"] == "packages host")
    assert "emacs-nox" in install["detail"]
    assert report["unreadable"] == []
    assert [c["resource"] for c in report["done"]] == [c["resource"] for c in report["plan"]]
    assert report["again"] == []

    inside = fjord("lab", "exec", "--name", lab, "--", "cat",
                   "/etc/apt/sources.list.d/fjord-debian.sources",
                   "/var/lib/fjord/simulated-packages.json")
    assert inside.returncode == 0 and "security.debian.org" in inside.stdout
    # examples/lab.yaml names no host.apt.suite: the lab's server runs the machine's
    # release (its /etc overlays the machine's, /usr is the machine's: docs/lab.md)
    release = host_release([Path("/etc/os-release"), Path("/usr/lib/os-release")]).codename
    assert release is not None, "the lab runs on Debian 12 or 13"
    assert f"Suites: {release} {release}-updates\n" in inside.stdout
    assert f"Suites: {release}-security\n" in inside.stdout
    sources = next(c for c in report["plan"]
                   if c["resource"] == "file /etc/apt/sources.list.d/fjord-debian.sources")
    assert f"suite {release}: the host's release (/etc/os-release: " in sources["detail"]
    assert '"emacs-nox"' in inside.stdout
    assert fingerprint() == before, "the lab wrote to the machine's files"
    assert not Path("/etc/apt/sources.list.d/fjord-debian.sources").exists()
