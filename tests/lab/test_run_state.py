"""The declared run state (issue 15 item 4): a container declared `state: stopped` is
defined but not started, libvirt does not start it at boot, apply does not start it
(and shuts it down if it was started by hand), and `fjord check` agrees."""

from __future__ import annotations

import json

import pytest
from faults import fjord
from test_containers import checks, host, images, two_containers  # noqa: F401

pytestmark = pytest.mark.lab


def domains(lab) -> dict[str, str]:
    out = lab.exec(["virsh", "-q", "-c", "lxc:///", "list", "--all"]).stdout
    return {f[1]: " ".join(f[2:]) for f in (line.split() for line in out.splitlines()) if f}


def changes(lab, *extra: str) -> list[dict]:
    return json.loads(fjord(lab, "apply", "--yes", "--json", *extra).stdout)["changes"]


def test_a_container_declared_stopped_stays_stopped_and_checks_green(host):  # noqa: F811
    lab, key, configure = host
    configure(two_containers(key, with_web=False) + "  idle: {state: stopped}\n")
    done = {c["resource"] for c in changes(lab)}
    assert "domain idle" in done and "container idle" not in done
    assert domains(lab) == {"test": "running", "idle": "shut off"}
    info = lab.exec(["virsh", "-c", "lxc:///", "dominfo", "idle"]).stdout
    assert "Autostart:      disable" in info
    results = checks(lab)
    failed = {n: c["detail"] for n, c in results.items() if not c["ok"]}
    assert not failed, failed
    assert results["container idle: stopped, as declared"]["ok"]
    assert changes(lab) == []
    # started by hand: the next apply shuts it down, as declared
    fjord(lab, "container", "start", "idle")
    (stop,) = changes(lab)
    assert stop["resource"] == "container idle" and "shut down" in stop["detail"]
    assert domains(lab)["idle"] == "shut off"
    # after a boot it is still stopped, check is green and there is nothing to apply
    lab.reboot()
    results = checks(lab)
    failed = {n: c["detail"] for n, c in results.items() if not c["ok"]}
    assert not failed, failed
    assert domains(lab) == {"test": "running", "idle": "shut off"}
    plan = json.loads(fjord(lab, "plan", "--json").stdout)["changes"]
    assert plan == [], plan
    # declared running again: apply starts it and it starts at boot
    configure(two_containers(key, with_web=False) + "  idle: {}\n")
    done = {c["resource"] for c in changes(lab)}
    assert {"domain idle", "container idle"} <= done
    assert domains(lab)["idle"] == "running"


def test_bridged_ipv6_containers_start_at_boot(host):  # noqa: F811
    """Issue 15 item 2: with bridged IPv6, the containers' ports from before a reboot must
    not stay in OVSDB (libvirt then refuses to start them: `vnetN is actually attached
    to bridge br-ex`); every container declared running is back, check green."""
    lab, key, configure = host
    config = two_containers(key).replace("mode: routed", "mode: bridged")
    assert "mode: bridged" in config
    configure(config)
    fjord(lab, "apply", "--yes")
    for n in range(2):
        lab.reboot()
        assert domains(lab) == {"test": "running", "web": "running"}, n
        results = checks(lab)
        failed = {name: c["detail"] for name, c in results.items() if not c["ok"]}
        assert not failed, (n, failed)
    assert changes(lab) == []
