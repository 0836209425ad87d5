"""Packages: parsing captured dpkg-query/apt-cache/apt-get output, the commands fjord
runs, planning (unknown packages fail at plan time) and the simulated manager."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from told import tell

from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host import packages
from fjord.host.services import DRIVER as SERVICES
from fjord.host.services import UnitState
from fjord.runner import Result

CAPTURED = Path(__file__).parent / "golden" / "host" / "captured"


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


class FakeRun:
    """Answers commands from captured output, keyed by the program and its verb."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: Sequence[str], **kw: Any) -> Result:
        argv = list(argv)
        self.calls.append((argv, kw))
        key = next((k for k in self.answers if " ".join(argv).startswith(k)), None)
        if key is None:
            raise AssertionError(f"unexpected command {argv}")
        rc, out, err = self.answers[key]
        if rc and kw.get("check", True):
            raise FjordError(f"command failed: {argv}")
        return Result(argv, rc, out, err, 0.0)


def answers() -> dict[str, tuple[int, str, str]]:
    return {
        "dpkg-query -W": (0, captured("dpkg-query.txt"), ""),
        "apt-get -s -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= install "
        "--no-install-recommends nosuchpkg":
            (100, captured("apt-get-s-unknown.stdout"), captured("apt-get-s-unknown.stderr")),
        "apt-get -s": (0, captured("apt-get-s-install.txt"), ""),
        "apt-get install": (0, "", ""),
        "apt-get update": (0, "", ""),
    }


# -- parsing ---------------------------------------------------------------------------


def test_parse_dpkg_status():
    status = packages.parse_dpkg_status(captured("dpkg-query.txt"))
    assert status["openvswitch-switch"] == "installed"
    assert status["rc-pkg"] == "config-files"
    assert status["half"] == "half-configured"
    assert "emacs-nox" not in status


def test_multiarch_installed_wins():
    text = "libfoo install ok installed\nlibfoo deinstall ok config-files\n"
    assert packages.parse_dpkg_status(text) == {"libfoo": "installed"}


def test_parse_unknown():
    assert packages.parse_unknown(captured("apt-get-s-unknown.stderr")) == ["nosuchpkg"]
    virtual = ("Package mail-transport-agent is a virtual package provided by:\n"
               "  courier-mta 1.0.16-3+b6\n\n"
               "E: Package 'mail-transport-agent' has no installation candidate\n")
    assert packages.parse_unknown(virtual) == ["mail-transport-agent"]
    assert packages.parse_unknown("E: Broken packages\n") == []


def test_parse_simulation():
    assert packages.parse_simulation(captured("apt-get-s-install.txt")) == [
        "install-info", "emacs-el", "emacsen-common", "emacs-common", "emacs-bin-common",
        "libgccjit0", "emacs-nox"]


# -- the commands ----------------------------------------------------------------------


def test_install_is_noninteractive_and_keeps_conffiles():
    run = FakeRun(answers())
    packages.AptManager(run).install(["emacs-nox"])
    ((argv, kw),) = run.calls
    assert argv == ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                    "-o", "Dpkg::Options::=--force-confdef",
                    "-o", "Dpkg::Options::=--force-confold", "emacs-nox"]
    assert kw["env"]["DEBIAN_FRONTEND"] == "noninteractive"
    assert kw["timeout"] >= 600


def test_update_fails_on_any_unreachable_source():
    run = FakeRun(answers())
    packages.AptManager(run).update()
    assert run.calls[0][0] == ["apt-get", "update", "-q", "--error-on=any"]


def test_read_only_queries_write_no_apt_cache():
    run = FakeRun(answers())
    pm = packages.AptManager(run)
    pm.simulate(["emacs-nox"])
    for argv, _ in run.calls:
        assert "Dir::Cache::pkgcache=" in argv and "Dir::Cache::srcpkgcache=" in argv


def test_simulation_failure_names_unknown_packages():
    with pytest.raises(packages.UnknownPackages, match="APT does not know nosuchpkg") as exc:
        packages.AptManager(FakeRun(answers())).simulate(["nosuchpkg"])
    assert exc.value.names == ["nosuchpkg"]


def test_no_dpkg_is_unreadable():
    def run(argv: Sequence[str], **kw: Any) -> Result:
        raise FjordError("program not found: dpkg-query")

    with pytest.raises(StateUnreadable):
        packages.AptManager(run).installed()


# -- planning --------------------------------------------------------------------------


class FakeServices:
    """A service manager that knows only the units it is given."""

    name = "fake"

    def __init__(self, units: dict[str, tuple[str, str]] | None = None) -> None:
        self.units = units or {}
        self.asked: list[str] = []

    def state(self, unit: str) -> UnitState:
        self.asked.append(unit)
        return UnitState(unit, *self.units.get(unit, ("not-found", "inactive")))


def ctx_with(pm: Any, services: FakeServices | None = None) -> Context:
    ctx = Context(desired=None)  # type: ignore[arg-type]
    ctx.drivers[packages.DRIVER] = pm
    ctx.drivers[SERVICES] = services or FakeServices()
    return ctx


class Lists:
    def __init__(self, pending: bool) -> None:
        self._pending = pending

    def pending(self) -> bool:
        return self._pending


def test_required_set_installed_means_no_change():
    ctx = ctx_with(packages.AptManager(FakeRun(answers())))
    r = packages.Packages(dict(packages.REQUIRED) | {"dbus": "host.packages"})
    assert r.changes(ctx) == []
    assert "dnsmasq-base" not in dict(packages.REQUIRED)


def test_lxc_is_not_a_base_package_and_lxc_net_is_said_in_the_plan():
    """The lxc package starts lxc-net (lxcbr0 + dnsmasq) and fjord uses none of it."""
    assert "lxc" not in dict(packages.REQUIRED)
    base = dict(packages.REQUIRED)
    # captured dpkg-query has lxc installed (an earlier fjord installed it)
    services = FakeServices({"lxc-net.service": ("enabled", "active")})
    ctx = ctx_with(packages.AptManager(FakeRun(answers())), services)
    assert packages.Packages(base).changes(ctx) == []
    (warning,) = ctx.warnings
    assert warning.startswith("packages: lxc-net.service (from the lxc package) is enabled "
                              "and active: it runs a second bridge, lxcbr0")
    assert "systemctl mask --now lxc-net" in warning and "apt-get purge lxc" in warning
    # masked or stopped and disabled: nothing to say
    for state in (("masked", "inactive"), ("disabled", "inactive")):
        ctx = ctx_with(packages.AptManager(FakeRun(answers())),
                       FakeServices({"lxc-net.service": state}))
        assert packages.Packages(base).changes(ctx) == [] and ctx.warnings == []
    # asked for in host.packages: the owner wants it, lxc-net included
    services = FakeServices({"lxc-net.service": ("enabled", "active")})
    ctx = ctx_with(packages.AptManager(FakeRun(answers())), services)
    assert packages.Packages(base | {"lxc": "host.packages"}).changes(ctx) == []
    assert ctx.warnings == [] and services.asked == []


def test_lxc_net_is_not_asked_about_when_lxc_is_not_installed():
    text = "\n".join(line for line in captured("dpkg-query.txt").splitlines()
                     if not line.startswith("lxc "))
    services = FakeServices({"lxc-net.service": ("enabled", "active")})
    ctx = ctx_with(packages.AptManager(FakeRun({**answers(), "dpkg-query -W": (0, text, "")})),
                   services)
    packages.Packages({"dbus": "x"}).changes(ctx)
    assert ctx.warnings == [] and services.asked == []


def test_plan_lists_missing_packages_with_dependencies():
    run = FakeRun(answers())
    ctx = ctx_with(packages.AptManager(run))
    (change,) = packages.Packages({"emacs-nox": "host.packages", "dbus": "x",
                                   "rc-pkg": "y", "half": "z"}).changes(ctx)
    assert change.action == "create"
    assert change.detail == "install emacs-nox, rc-pkg, half (is half-configured) (+6 dependencies)"
    change.run(ctx)
    assert run.calls[-1][0][-3:] == ["emacs-nox", "rc-pkg", "half"]


def test_unknown_package_fails_at_plan_time_with_one_apt_call():
    run = FakeRun(answers())
    ctx = ctx_with(packages.AptManager(run))
    with pytest.raises(FjordError, match=r"nosuchpkg \(host.packages\)"):
        packages.Packages({"nosuchpkg": "host.packages"}).changes(ctx)
    assert [argv[0] for argv, _ in run.calls] == ["dpkg-query", "apt-get"]


def test_unknown_package_waits_for_pending_update():
    ctx = ctx_with(packages.AptManager(FakeRun(answers())))
    r = packages.Packages({"nosuchpkg": "host.packages"}, lists=Lists(pending=True))
    (change,) = r.changes(ctx)
    assert "checked after apt-get update" in change.detail


def test_wanted_adds_host_packages_to_the_required_set():
    from fjord.config.desired import load

    wanted = packages.wanted(load("examples/lab.yaml"))
    assert list(wanted)[: len(packages.REQUIRED)] == [n for n, _ in packages.REQUIRED]
    assert wanted["emacs-nox"] == "host.packages"


# -- simulated -------------------------------------------------------------------------


def test_simulated_install_records_and_never_installs(tmp_path: Path):
    run = FakeRun(answers())
    record = tmp_path / "simulated-packages.json"
    pm = packages.SimulatedManager(run, record=record)
    ctx = ctx_with(pm)
    r = packages.Packages({"emacs-nox": "host.packages"})
    (change,) = r.changes(ctx)
    change.run(ctx)
    assert not any(argv[:2] == ["apt-get", "install"] for argv, _ in run.calls)
    assert json.loads(record.read_text())["installed"]["emacs-nox"][-1] == "emacs-nox"
    assert r.changes(ctx) == []
    pm.update()
    assert not any(argv[:2] == ["apt-get", "update"] for argv, _ in run.calls)


def test_simulated_install_still_fails_like_apt(tmp_path: Path):
    pm = packages.SimulatedManager(FakeRun(answers()), record=tmp_path / "s.json")
    with pytest.raises(FjordError, match="Unable to locate"):
        pm.install(["nosuchpkg"])
    assert not (tmp_path / "s.json").exists()


def test_factory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from fjord.environment import Environment

    monkeypatch.delenv(packages.ENV, raising=False)
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    assert packages.manager(Context(None)).name == "apt"  # type: ignore[arg-type]
    env = tell(monkeypatch, FJORD_PACKAGE_MANAGER="simulate")
    pm = packages.manager(Context(None, env=env))  # type: ignore[arg-type]
    assert pm.name == "simulate"
    assert isinstance(pm, packages.SimulatedManager)
    assert pm.record == tmp_path / "simulated-packages.json"
    with pytest.raises(FjordError, match="not a package manager"):
        Environment.from_system({packages.ENV: "yum"})


# -- by switch kind --------------------------------------------------------------------


def _desired_with_switch(tmp_path: Path, kind: str):
    from fjord.config.desired import load

    text = Path("examples/lab.yaml").read_text()
    assert "    kind: ovs" in text
    path = tmp_path / "fjord.yaml"
    path.write_text(text.replace("    kind: ovs", f"    kind: {kind}")
                    .replace("    datapath: netdev", ""))
    return load(str(path))


def test_linux_bridges_need_bridge_utils_for_ifupdown(tmp_path: Path):
    """Issue 15, item 1: `bridge_ports` stanzas do nothing without bridge-utils' ifupdown
    hook, and the bridges were gone after a reboot."""
    wanted = packages.wanted(_desired_with_switch(tmp_path, "linux-bridge"))
    assert wanted["bridge-utils"].startswith("host.switch.kind is linux-bridge")
    assert "bridge-utils" not in packages.wanted(_desired_with_switch(tmp_path, "ovs"))


def test_the_plan_says_why_a_configuration_choice_adds_a_package(tmp_path: Path):
    text = "\n".join(line for line in captured("dpkg-query.txt").splitlines()
                     if not line.startswith("bridge-utils "))
    run = FakeRun({**answers(), "dpkg-query -W": (0, text, "")})
    ctx = ctx_with(packages.AptManager(run))
    wanted = packages.wanted(_desired_with_switch(tmp_path, "linux-bridge"))
    (change,) = packages.Packages(wanted).changes(ctx)
    assert change.detail.startswith("install bridge-utils (for host.switch.kind is "
                                    "linux-bridge: ifupdown's bridge_ports")
