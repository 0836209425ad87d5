"""The lab's service manager (FJORD_SERVICE_MANAGER=lab), used by fjord inside a lab."""

from __future__ import annotations

import json
import sys

import pytest

from fjord.lab import Lab

pytestmark = pytest.mark.lab

PROBE = r"""
import json, os, sys, time
from fjord.cli import system_environment
from fjord.host.services import open_manager
mgr = open_manager(system_environment(os.environ))
out = {"name": mgr.name, "env": os.environ.get("FJORD_PACKAGE_MANAGER")}
def st(unit):
    s = mgr.state(unit)
    return [s.enabled, s.active]
out["before"] = {u: st(u) for u in ("libvirtd", "libvirtd.socket", "openvswitch-switch",
                                    "ssh.service", "libvirtd-tcp.socket")}
started = mgr.started_at("libvirtd")
out["started_recently"] = started is not None and abs(time.time() - started) < 600
mgr.stop("libvirtd")
out["stopped"] = st("libvirtd")
mgr.start("libvirtd")
out["started"] = st("libvirtd")
old = mgr.started_at("openvswitch-switch")
time.sleep(0.05)
mgr.restart("openvswitch-switch")
out["restarted"] = mgr.started_at("openvswitch-switch") > old
out["ovs"] = st("openvswitch-switch")
mgr.enable("libvirtd")
out["enabled"] = st("libvirtd")[0]
try:
    mgr.start("ssh")
except Exception as exc:
    out["unsupervised"] = str(exc)
print(json.dumps(out))
"""


def test_the_lab_supervises_its_daemons(lab: Lab) -> None:
    out = json.loads(lab.exec([sys.executable, "-c", PROBE]).stdout)
    assert out["name"] == "lab" and out["env"] == "simulate"  # the lab's defaults
    assert out["before"] == {
        "libvirtd": ["enabled", "active"],
        "libvirtd.socket": ["enabled", "active"],
        "openvswitch-switch": ["enabled", "active"],
        "ssh.service": ["not-found", "inactive"],
        "libvirtd-tcp.socket": ["not-found", "inactive"],
    }
    assert out["started_recently"]
    assert out["stopped"] == ["enabled", "inactive"]
    assert out["started"] == ["enabled", "active"]
    assert out["restarted"] and out["ovs"] == ["enabled", "active"]
    assert out["enabled"] == "enabled"
    assert "does not supervise ssh" in out["unsupervised"]
    # the daemons the manager started are the lab's: down finds them
    assert lab.status()["server"]["daemons"]["libvirtd"] in lab.cgroup.procs("server")
    assert lab.exec(["virsh", "-c", "lxc:///", "list"]).ok


def test_a_disabled_unit_stays_down_after_reboot(lab: Lab) -> None:
    lab.exec(["systemctl", "disable", "libvirtd.service"])
    report = lab.reboot()
    assert report.ok
    assert next(s for s in report.steps if s.name == "libvirtd").detail == "libvirtd not enabled"
    assert lab.status()["server"]["daemons"]["libvirtd"] is None
