"""`fjord apply --prune` (issue 15 item 3), previewed by `fjord plan --prune`: it leaves
exactly what a file without the pruned container would have, in the same apply — no
name of it in /etc/hosts (the host's or the other containers'), no /128 route or proxy
NDP entry — so that the next apply has nothing to do and check is green."""

from __future__ import annotations

import json

import pytest
from faults import fjord
from test_containers import checks, host, images, two_containers  # noqa: F401

pytestmark = pytest.mark.lab


def test_prune_converges_in_one_apply(host):  # noqa: F811
    lab, key, configure = host
    configure(two_containers(key))
    fjord(lab, "apply", "--yes")
    listed = json.loads(fjord(lab, "container", "list", "--json").stdout)["containers"]
    web6 = next(c["ipv6"] for c in listed if c["name"] == "web")
    assert web6 and web6 in lab.exec(["ip", "-6", "route", "show", "dev", "br-int"]).stdout
    configure(two_containers(key, with_web=False))
    kept = json.loads(fjord(lab, "plan", "--json").stdout)["changes"]
    assert "container web" not in {c["resource"] for c in kept}, kept
    preview = json.loads(fjord(lab, "plan", "--json", "--prune").stdout)["changes"]
    assert {"resource": "container web", "action": "delete"}.items() <= next(
        c for c in preview if c["resource"] == "container web").items(), preview
    out = json.loads(fjord(lab, "apply", "--yes", "--json", "--prune").stdout)["changes"]
    assert "container web" in {c["resource"] for c in out}
    # every change apply --prune made was shown by plan --prune, in the same order (apply
    # re-reads each resource: one that an earlier change already settled, such as the
    # flows libvirt's hook rebuilt when the container went, is then skipped)
    applied = [(c["resource"], c["action"]) for c in out]
    shown = iter((c["resource"], c["action"]) for c in preview)
    assert all(change in shown for change in applied), (applied, preview)
    second = json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"]
    assert second == [], second
    assert web6 not in lab.exec(["ip", "-6", "route", "show", "dev", "br-int"]).stdout
    assert web6 not in lab.exec(["ip", "-6", "neigh", "show", "proxy"]).stdout
    assert "web" not in lab.exec(["cat", "/etc/hosts"]).stdout
    inside = fjord(lab, "container", "exec", "test", "--", "cat", "/etc/hosts").stdout
    assert "web" not in inside
    results = checks(lab)
    failed = {n: c["detail"] for n, c in results.items() if not c["ok"]}
    assert not failed, failed


def test_a_container_removed_by_hand_is_freed_by_prune(host):  # noqa: F811
    """Its domain and root removed without fjord: its addresses, /128 route and names
    stay (as for any container out of the file) until --prune frees them, which it
    could not do before (nothing was left to find it by)."""
    lab, key, configure = host
    configure(two_containers(key))
    fjord(lab, "apply", "--yes")
    listed = json.loads(fjord(lab, "container", "list", "--json").stdout)["containers"]
    web6 = next(c["ipv6"] for c in listed if c["name"] == "web")
    fjord(lab, "container", "stop", "web")
    lab.exec(["virsh", "-c", "lxc:///", "undefine", "web"])
    root = "/var/lib/fjord/containers/web"
    # what a stopped container keeps mounted (its lower layer), unmounted, deepest first
    mounts = [line.split()[4] for line in
              lab.exec(["cat", "/proc/self/mountinfo"]).stdout.splitlines()]
    for target in sorted((m for m in mounts if m.startswith(root + "/") or m == root),
                         key=len, reverse=True):
        lab.exec(["umount", target])
    assert root not in lab.exec(["cat", "/proc/self/mountinfo"]).stdout
    lab.exec(["rm", "-rf", "--one-file-system", root])
    configure(two_containers(key, with_web=False))
    plan = json.loads(fjord(lab, "plan", "--json").stdout)
    assert any("web is gone" in w for w in plan.get("warnings", [])), plan
    assert web6 in lab.exec(["ip", "-6", "route", "show", "dev", "br-int"]).stdout
    out = json.loads(fjord(lab, "apply", "--yes", "--json", "--prune").stdout)["changes"]
    assert ("container web", "delete") in {(c["resource"], c["action"]) for c in out}, out
    assert json.loads(fjord(lab, "apply", "--yes", "--json").stdout)["changes"] == []
    assert web6 not in lab.exec(["ip", "-6", "route", "show", "dev", "br-int"]).stdout
    assert "web" not in lab.exec(["cat", "/var/lib/fjord/allocations.json"]).stdout
    assert "web" not in lab.exec(["cat", "/etc/hosts"]).stdout
    failed = {n: c["detail"] for n, c in checks(lab).items() if not c["ok"]}
    assert not failed, failed
