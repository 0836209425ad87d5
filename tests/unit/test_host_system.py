"""The whole host system layer under a temporary root, with fake package and service
managers: the order of the work, one apply converges, the second changes nothing."""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hosts import ON_BOOKWORM
from told import tell

from fjord.config.desired import load
from fjord.engine.apply import apply
from fjord.engine.order import order
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context, Drivers
from fjord.host import packages, services, system
from fjord.host.services import UnitState

LAYOUTS = Path(__file__).parent / "golden" / "host" / "cgroups"


class FakePackages:
    name = "fake"

    def __init__(self, installed: Sequence[str]) -> None:
        self.have = {n: "installed" for n in installed}
        self.log: list[str] = []

    def installed(self) -> dict[str, str]:
        return dict(self.have)

    def simulate(self, names: Sequence[str]) -> list[str]:
        return list(names)

    def install(self, names: Sequence[str]) -> None:
        self.log.append("install " + " ".join(names))
        self.have.update({n: "installed" for n in names})

    def update(self) -> None:
        self.log.append("update")


class FakeServices:
    name = "fake"

    def __init__(self) -> None:
        # Fresh Debian 12 after the packages: everything enabled and running, the
        # listeners disabled.
        self.units = {"openvswitch-switch": ["enabled", "active"],
                      "libvirtd": ["enabled", "active"],
                      "lxcfs": ["enabled", "active"],
                      "libvirtd.socket": ["enabled", "active"],
                      "libvirtd-tcp.socket": ["disabled", "inactive"],
                      "libvirtd-tls.socket": ["enabled", "active"]}
        self.since = {u: time.time() - 3600 for u in self.units}
        self.log: list[str] = []

    def state(self, unit: str) -> UnitState:
        enabled, active = self.units.get(unit, ["not-found", "inactive"])
        return UnitState(unit, enabled, active)

    def started_at(self, unit: str) -> float | None:
        return self.since.get(unit)

    def _do(self, verb: str, unit: str, index: int, word: str) -> None:
        self.log.append(f"{verb} {unit}")
        self.units.setdefault(unit, ["disabled", "inactive"])[index] = word

    def enable(self, unit: str) -> None:
        self._do("enable", unit, 0, "enabled")

    def disable(self, unit: str) -> None:
        self._do("disable", unit, 0, "disabled")

    def start(self, unit: str) -> None:
        self._do("start", unit, 1, "active")
        self.since[unit] = time.time()

    def stop(self, unit: str) -> None:
        self._do("stop", unit, 1, "inactive")

    def restart(self, unit: str) -> None:
        self._do("restart", unit, 1, "active")
        self.since[unit] = time.time()


class Quiet:
    def started(self, change: Any) -> None: ...
    def finished(self, change: Any, seconds: float) -> None: ...
    def failed(self, change: Any, error: BaseException) -> None: ...


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr("fjord.host.files.pwd.getpwnam", lambda name: me)
    root = tmp_path / "root"
    shutil.copytree(LAYOUTS / "unified", root)
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/libvirtd").write_text('#LIBVIRTD_ARGS="--timeout 120"\n')
    return root


def test_order_of_the_work(root: Path):
    desired = load("examples/seed.yaml", ON_BOOKWORM)
    ids = [r.id for r in order(system.resources(desired, root))]
    kinds = [i.split()[0] for i in ids]
    assert kinds.index("apt-update") > kinds.index("file")
    assert ids.index("packages host") > ids.index("apt-update lists")
    assert ids.index(f"file {root}/etc/libvirt/libvirtd.conf") > ids.index("packages host")
    assert ids.index("service libvirtd") > ids.index(f"file {root}/etc/libvirt/libvirtd.conf")
    assert ids.index("service libvirtd") > ids.index("service libvirtd-tls.socket")
    assert ids[-1] == "cgroups layout"


def test_apply_converges_and_the_second_apply_is_empty(root: Path):
    desired = load("examples/lab.yaml", ON_BOOKWORM)
    pm = FakePackages(installed=["openvswitch-switch", "iproute2", "dbus"])
    sm = FakeServices()
    ctx = Context(desired)
    ctx.drivers.update({packages.DRIVER: pm, services.DRIVER: sm})

    plan = make_plan(system.resources(desired, root), ctx)
    assert plan.unreadable == [] and plan.warnings == []
    shown = [f"{c.resource}: {c.detail}" for c in plan.changes]
    assert any(s.startswith("packages host: install libvirt-daemon-system") for s in shown)
    assert "service libvirtd-tls.socket: disable libvirtd-tls.socket (libvirtd only on its " \
           "UNIX sockets); is enabled" in shown
    assert f"service libvirtd: restart libvirtd ({root}/etc/libvirt/libvirtd.conf, " \
           f"{root}/etc/libvirt/hooks/lxc.d/50-fjord will change)" in shown, shown

    done = apply(system.resources(desired, root), ctx, Quiet())
    assert pm.log == ["update", "install libvirt-daemon-system libvirt-daemon-driver-lxc "
                      "libvirt-clients mmdebstrap lxcfs nftables ifupdown emacs-nox"]
    assert sm.log == ["disable libvirtd-tls.socket", "stop libvirtd-tls.socket",
                      "restart libvirtd"]
    assert len(done) == len(plan.changes)
    assert (root / "etc/libvirt/libvirt.conf").read_text().endswith('uri_default = "lxc:///"\n')

    again = make_plan(system.resources(desired, root), Context(desired, drivers=ctx.drivers))
    assert again.changes == [] and again.unreadable == []


def test_operator_edit_is_reverted_and_restarts_the_daemon(root: Path):
    desired = load("examples/lab.yaml", ON_BOOKWORM)
    pm = FakePackages(installed=[n for n, _ in packages.REQUIRED] + ["emacs-nox", "dbus"])
    sm = FakeServices()
    drivers = {packages.DRIVER: pm, services.DRIVER: sm}
    apply(system.resources(desired, root), Context(desired, drivers=Drivers(drivers)), Quiet())
    sm.log.clear()
    (root / "etc/default/libvirtd").write_text('LIBVIRTD_ARGS="--listen"\n')
    done = apply(system.resources(desired, root), Context(desired, drivers=Drivers(drivers)),
                 Quiet())
    assert [c.resource for c in done] == [f"file {root}/etc/default/libvirtd", "service libvirtd"]
    assert sm.log == ["restart libvirtd"]
    assert pm.log == ["update"]  # only the first apply's, never again


def test_lxcfs_mount_point_is_made_where_lxcfs_never_ran(root: Path):
    """Every domain mounts /var/lib/lxcfs; libvirt refuses a missing mount source."""
    desired = load("examples/lab.yaml", ON_BOOKWORM)
    point = next(r for r in system.resources(desired, root)
                 if isinstance(r, system.MountPoint))
    ctx = Context(desired)
    (change,) = point.changes(ctx)
    assert change.detail.startswith(f"mkdir {root}/var/lib/lxcfs")
    change.run(ctx)
    assert (root / "var/lib/lxcfs").is_dir() and point.changes(ctx) == []


def test_udev_is_kept_off_veth_macs_before_libvirtd_starts_containers(root: Path):
    """udev's persistent MAC policy raced libvirt on Debian 12 and gave containers MACs
    nobody declared (the VM tier proves the effect; this the file and its order)."""
    desired = load("examples/lab.yaml", ON_BOOKWORM)
    ids = [r.id for r in order(system.resources(desired, root))]
    link = f"file {root}/{system.VETH_LINK}"
    assert ids.index("service libvirtd") > ids.index(link)
    ctx = Context(desired)
    (resource,) = [r for r in system.resources(desired, root) if r.id == link]
    for change in resource.changes(ctx):
        change.run(ctx)
    parsed = configparser.ConfigParser()
    parsed.read_string((root / system.VETH_LINK).read_text())
    assert dict(parsed["Match"]) == {"driver": "veth"}
    assert dict(parsed["Link"]) == {"macaddresspolicy": "none"}
    # it sorts before the default policy's file, so udev takes it for every veth
    assert system.VETH_LINK.name < "99-default.link"
