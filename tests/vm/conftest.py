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

sys.path.insert(0, str(Path(__file__).parent))

import guest
from machine import Machine
from prepare import SUITES, prepare
from provider import Provider
from server import Server


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
    config, names, spec, disk, bundle = prepare(suite, workdir)
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
