"""A lab's namespaces survive what other tools do to /run/netns.

`ip netns add`, run by anything on the machine after a lab is up, turns /run/netns into a
recursive bind mount of itself. A namespace mounted on /run/netns/NAME then has a second,
hidden mount below the new one: its file cannot be unlinked (EBUSY) and `lab down` used to
end in a traceback, leaving namespaces and mounts behind. Each test runs in a private
mount namespace of its own, so the machine's mount table is never changed.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap

import pytest

from fjord.lab.names import mount_path, netns_path

pytestmark = pytest.mark.lab


def _in_private_mounts(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
         textwrap.dedent(script)],
        capture_output=True, text=True, timeout=60)


def test_remove_after_ip_netns_add_remounted_run_netns(lab_root: None) -> None:
    name = "fjord-t" + secrets.token_hex(4) + "-ns"
    other = "fjord-t" + secrets.token_hex(4) + "-other"
    result = _in_private_mounts(f"""
        import subprocess
        from fjord.lab import namespaces
        namespaces.create({name!r})
        subprocess.run(["ip", "-n", {name!r}, "link", "add", "probe0", "type", "veth",
                        "peer", "name", "probe1"], check=True)
        # what any `ip netns add` on the machine does to /run/netns
        subprocess.run(["ip", "netns", "add", {other!r}], check=True)
        mounts = open("/proc/self/mountinfo").read()
        assert " /run/netns " in mounts, "ip netns add did not re-mount /run/netns"
        try:
            namespaces.remove({name!r})
        finally:
            subprocess.run(["ip", "netns", "delete", {other!r}], check=True)
        mounts = open("/proc/self/mountinfo").read()
        assert {name!r} not in mounts, mounts
        assert not namespaces.exists({name!r})
        print("removed")
    """)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "removed"
        assert not netns_path(name).is_symlink() and not netns_path(name).exists()
        assert not mount_path(name).exists()
    finally:
        for leftover in (netns_path(name), mount_path(name), netns_path(other)):
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink()


def test_ip_netns_sees_and_enters_a_lab_namespace(lab_root: None) -> None:
    name = "fjord-t" + secrets.token_hex(4) + "-ns"
    result = _in_private_mounts(f"""
        import subprocess
        from fjord.lab import namespaces
        namespaces.create({name!r})
        try:
            listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    check=True).stdout.split()
            assert {name!r} in listed, listed
            links = subprocess.run(["ip", "-n", {name!r}, "-br", "link"],
                                   capture_output=True, text=True, check=True).stdout
            assert links.split()[0] == "lo", links
            again = None
            try:
                namespaces.create({name!r})
            except namespaces.NamespaceExists as exc:
                again = exc
            assert again is not None
        finally:
            namespaces.remove({name!r})
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_lab_down_after_ip_netns_add_leaves_nothing(lab_name: str, lab_config: str) -> None:
    """Issue 16's case: a lab is up, something runs `ip netns add`, `lab down` then
    leaves no mount, namespace, symlink or directory of the lab behind (and no
    traceback). The lab lives in a private mount namespace, like the re-mount."""
    other = "fjord-t" + secrets.token_hex(4) + "-other"
    result = _in_private_mounts(f"""
        import os, subprocess
        from fjord.lab import Lab
        lab = Lab({lab_name!r})
        lab.up(config={lab_config!r}, owner=os.getpid())
        subprocess.run(["ip", "netns", "add", {other!r}], check=True)
        try:
            assert lab.down()
        finally:
            subprocess.run(["ip", "netns", "delete", {other!r}], check=True)
        mounts = open("/proc/self/mountinfo").read()
        left = [line for line in mounts.splitlines() if "fjord-{lab_name}-" in line]
        assert not left, left
        print("down")
    """)
    from fjord.lab import Lab
    from fjord.lab.names import Names

    names = Names(lab_name)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("down"), result.stdout
        for ns in names.all_netns:
            assert not netns_path(ns).is_symlink() and not netns_path(ns).exists(), ns
            assert not mount_path(ns).exists(), ns
        assert not names.dir.exists()
    finally:
        if names.dir.exists():
            Lab(lab_name).down()
