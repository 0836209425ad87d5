"""Fixtures for the VM tier: a real Debian server booted under QEMU at a simulated
provider (tests/vm/README in docs/vm.md).

    def test_something(server):
        server.vm.ssh("fjord check -c /etc/fjord/fjord.yaml")

``server`` is module-scoped and parametrised over the releases (Debian 12 and 13): the
tests of a module run in order against one server per release, which is booted once,
installed once, and torn down (QEMU, namespaces, daemons) after the module, failed or
not. The tier needs root; CI must run it (CI=true): it fails there instead of
skipping. ``FJORD_VM_SUITES=trixie`` limits the releases.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import guest
from machine import Machine
from provider import Provider
from server import Server

from fjord.config.desired import load
from fjord.lab.mounts import shared_images_dir
from fjord.lab.names import Names
from fjord.lab.spec import from_host

CHECKOUT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).parent / "server.yaml"
SUITES = [s for s in os.environ.get("FJORD_VM_SUITES", "bookworm trixie").split() if s]
# The provider profile each release's server sits behind (fjord.lab.provider).
PROFILES = {"bookworm": "routed", "trixie": "routed"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_config(suite: str, workdir: Path) -> Path:
    doc = yaml.safe_load(TEMPLATE.read_text())
    doc["host"]["apt"]["suite"] = suite
    path = workdir / "fjord.yaml"
    path.write_text(f"# {TEMPLATE.name} for Debian {guest.RELEASES[suite]}\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


def container_images(config: Path) -> dict[str, Path]:
    """The containers' images, built here (the VM has no Internet), keyed by the path
    fjord looks for them on the server."""
    import subprocess

    subprocess.run([str(CHECKOUT / ".venv/bin/fjord"), "image", "build", "--for-labs",
                    "-c", str(config)], check=True, capture_output=True, timeout=1800)
    from fjord.containers.image import spec_for

    desired = load(str(config), allocations={})
    out = {}
    for c in desired.containers:
        key = spec_for(c, desired).key
        out[f"/var/lib/fjord/images/{key}"] = shared_images_dir() / key
    return out


@pytest.fixture(scope="module", params=SUITES, ids=[f"debian{guest.RELEASES[s]}"
                                                     for s in SUITES])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Server]:
    if os.geteuid() != 0:
        if _in_ci():
            pytest.fail("the VM tier needs root and CI must run it")
        pytest.skip("the VM tier needs root (sudo scripts/test-vm)")
    suite = request.param
    workdir = tmp_path_factory.mktemp(f"vm-{suite}")
    config = server_config(suite, workdir)
    desired = load(str(config), allocations={})
    names = Names(f"vm{guest.RELEASES[suite]}-{os.getpid() % 10000}")
    spec = from_host(names.lab, desired.host, PROFILES[suite])
    disk = guest.disk(suite, spec, extras=container_images(config))
    bundle = guest.bundle(suite, CHECKOUT)
    provider = Provider(names, spec, workdir / "provider")
    vm = Machine(disk, workdir / "machine", names.netns_upstream, spec.mac,
                 str(spec.ipv4_interface.ip))
    try:
        provider.create(disk.mirror)
        vm.start(provider.tap)
        seconds = vm.wait_ssh()
        guest.log(f"Debian {guest.RELEASES[suite]} answered SSH {seconds:.0f} s after "
                  f"power-on ({vm.accel})")
        yield Server(suite, vm, provider, spec, config, bundle)
    finally:
        keep = workdir / "console.log"
        try:
            keep.write_text(vm.console.read_text(errors="replace"))
        except OSError:
            pass
        vm.stop()
        provider.destroy()
