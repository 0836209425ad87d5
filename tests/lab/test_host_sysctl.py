"""host.sysctl on a simulated server: apply sets the declared kernel parameters in the
server's network namespace and persists them, the second apply changes nothing, and
`lab reboot` (which replays /etc/sysctl.d as systemd-sysctl does) brings them back.

Only per-network-namespace keys (net.core.somaxconn, net.ipv4.tcp_syncookies) are
used: a machine-global one would be this machine's (the lab refuses those anyway)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faults import EXAMPLE, apply, fjord, plan

from fjord.lab import Lab

pytestmark = pytest.mark.lab

DECLARED = {"net.core.somaxconn": "3072", "net.ipv4.tcp_syncookies": "2"}


def read(lab: Lab, key: str) -> str:
    return lab.exec(["sysctl", "-n", key]).stdout.strip()


def test_host_sysctl_is_set_kept_empty_on_second_apply_and_survives_reboot(
        make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    machine = {k: Path("/proc/sys", k.replace(".", "/")).read_text() for k in DECLARED}
    text = Path(EXAMPLE).read_text()
    lines = "".join(f"    {k}: {v}\n" for k, v in DECLARED.items())
    config = tmp_path / "sysctl.yaml"
    config.write_text(text.replace("host:\n", f"host:\n  sysctl:\n{lines}", 1))
    lab = make_lab()
    before = {k: read(lab, k) for k in DECLARED}
    assert before != DECLARED

    changes = apply(lab, str(config), ("host",))
    set_here = [c["resource"] for c in changes if c["resource"].startswith("sysctl ")]
    assert set(set_here) >= {f"sysctl {k}" for k in DECLARED}
    assert {k: read(lab, k) for k in DECLARED} == DECLARED
    persisted = lab.exec(["cat", "/etc/sysctl.d/60-fjord.conf"]).stdout
    assert "net.core.somaxconn = 3072\n" in persisted
    assert apply(lab, str(config), ("host",)) == []

    # a key fjord sets itself: refused before anything is read or changed
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("    net.core.somaxconn: 3072\n",
                                              "    net.ipv4.ip_forward: 0\n"))
    refused = fjord(lab, "plan", "-c", str(bad), check=False)
    assert refused.returncode == 2, refused.stderr
    assert "host.sysctl.net.ipv4.ip_forward" in refused.stderr
    assert "set by fjord itself" in refused.stderr
    # a key this kernel does not have: the plan says which
    missing = tmp_path / "missing.yaml"
    missing.write_text(config.read_text().replace("net.core.somaxconn", "net.core.nosuchkey"))
    absent = fjord(lab, "apply", "-c", str(missing), "--yes", "--only", "host", check=False)
    assert absent.returncode == 1, absent.stderr
    assert "host.sysctl: net.core.nosuchkey does not exist on this host" in absent.stderr

    report = lab.reboot()
    assert report.ok, json.dumps(report.to_json())
    assert {k: read(lab, k) for k in DECLARED} == DECLARED
    assert not [c for c in plan(lab, str(config), ("host",))["changes"]
                if c["resource"].startswith("sysctl ")]
    # this machine's own values never moved
    assert {k: Path("/proc/sys", k.replace(".", "/")).read_text()
            for k in DECLARED} == machine
