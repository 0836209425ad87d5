"""Boot persistence as a real systemd boot sees it: `lab reboot` replays the installed
units (networking.service's `ifdown -a` at shutdown, `ifup -a` at boot; Debian's
openvswitch-switch.service runs /bin/true), so the bridges come back only from `auto`
stanzas, and br-ex keeps its MAC only if /etc/network/interfaces says it (the shutdown
deletes the bridges from OVSDB). Found on a real Debian 13 boot (DESIGN.md, real-boot
fact 4; issue 13)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from faults import EXAMPLE, apply, plan

from fjord.lab import Lab

pytestmark = pytest.mark.lab

PUBLIC4, PUBLIC6 = "192.0.2.5", "2001:db8:151:7307::2"
BOOT_STATE = "lo=lo\nbr-ex=br-ex\neth0=eth0\nbr-int=br-int\n"


def reaches(lab: Lab, address: str, tries: int = 3) -> bool:
    argv = ["ping", "-6" if ":" in address else "-4", "-c1", "-W1", "-q", address]
    return any(lab.upstream(argv, check=False, timeout=10).ok for _ in range(tries))


def mac(lab: Lab, dev: str) -> str:
    (link,) = json.loads(lab.exec(["ip", "-j", "link", "show", dev]).stdout)
    return str(link["address"])


def ovs(lab: Lab, *args: str) -> str:
    return lab.exec(["ovs-vsctl", *args]).stdout.strip()


def old_render(text: str) -> str:
    """The file as fjord rendered it before: bridges only `allow-ovs`, no MAC."""
    text = re.sub(r"^auto br-(ex|int)\n", "", text, flags=re.M)
    return re.sub(r" -- set bridge \$\{IFACE\} other_config:hwaddr=\S+", "", text)


def test_a_file_with_allow_ovs_bridges_only_does_not_come_back(
        make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    apply(lab)
    assert reaches(lab, PUBLIC4)
    text = lab.exec(["cat", "/etc/network/interfaces"]).stdout
    old = old_render(text)
    assert "auto br-ex" not in old and "allow-ovs br-ex" in old and "hwaddr" not in old
    lab.exec(["tee", "/etc/network/interfaces"], input=old)
    report = lab.reboot()
    # the boot itself reports nothing wrong: `ifup -a` just does not raise the bridges
    assert report.ok, json.dumps(report.to_json())
    assert not reaches(lab, PUBLIC4) and not reaches(lab, PUBLIC6)
    assert "br-ex" not in ovs(lab, "list-br")


def test_the_host_comes_back_twice_with_the_same_mac(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(provider="routed")  # the provider accepts the server's MAC only
    apply(lab)
    # the switchover left ifupdown's state as a boot with the new file leaves it
    assert lab.exec(["cat", "/run/network/ifstate"]).stdout == BOOT_STATE
    uplink_mac = lab.spec.mac
    for n in (1, 2):
        before = mac(lab, "br-ex")
        assert before == uplink_mac, f"reboot {n}"
        uuid = ovs(lab, "get", "bridge", "br-ex", "_uuid")
        report = lab.reboot()
        assert report.ok, f"reboot {n}: {json.dumps(report.to_json())}"
        shutdown = report.steps[0]
        assert shutdown.name == "shutdown" and "ifdown -a" in shutdown.detail
        # the shutdown deleted the bridge, the boot made it again from the file
        assert ovs(lab, "get", "bridge", "br-ex", "_uuid") != uuid, f"reboot {n}"
        assert reaches(lab, PUBLIC4) and reaches(lab, PUBLIC6), f"reboot {n}"
        assert mac(lab, "br-ex") == before, f"reboot {n}: br-ex's MAC"
        assert ovs(lab, "port-to-br", "eth0") == "br-ex", f"reboot {n}"
        assert lab.exec(["cat", "/run/network/ifstate"]).stdout == BOOT_STATE
        assert plan(lab, EXAMPLE)["changes"] == [], f"reboot {n}"
