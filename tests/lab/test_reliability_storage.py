"""Containers' data on a simulated server:

- a configuration change never deletes a container's root filesystem (memory, CPUs,
  addresses, MACs, autostart, domain, packages and suite that need another image, another
  root filesystem mode, the container left out of the file, the private network moved);
- destroying or pruning needs an explicit flag;
- fjord's state files, corrupted, are detected, set aside and rebuilt; the containers
  keep their addresses and their data.

Data is a random megabyte per container with its checksum, read from the host side
(the container's overlay upper directory), so it is checked whether the container runs
or not. In CI a sample of the changes; all with FJORD_FULL_FAULTS=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import (
    ALL,
    EXAMPLE,
    FJORD,
    ROOT,
    SEED,
    apply,
    assert_converged,
    checks,
    fjord,
    fjord_state,
    only,
    record,
    sample,
)

from fjord.lab import Lab

pytestmark = pytest.mark.lab

BASE = Path(EXAMPLE).read_text() + "  web: {}\n"
NAMES = ("test", "web")


def variant(**edits: str) -> str:
    text = BASE
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# (name, configuration): each applied in turn, then the original again
CHANGES = [
    ("memory", variant(**{"  memory: 512MiB\n": "  memory: 1GiB\n"})),
    ("vcpus", variant(**{"  vcpus: 1\n": "  vcpus: 2\n"})),
    ("ipv4", variant(**{"  web: {}\n": "  web: {ipv4: 10.1.0.50}\n"})),
    ("mac", variant(**{"  web: {}\n": "  web: {mac: {private: '52:54:00:aa:bb:cc'}}\n"})),
    ("autostart", variant(**{"  web: {}\n": "  web: {autostart: false}\n"})),
    ("domain", variant(**{"  domain: example.net\n": "  domain: example.org\n"})),
    ("packages (another image)", variant(**{"  web: {}\n": "  web: {packages: [curl]}\n"})),
    ("suite (another image)", variant(**{"  web: {}\n": "  web: {suite: bookworm}\n"})),
    ("rootfs mode", variant(**{"  web: {}\n": "  web: {rootfs: copy}\n"})),
    ("left out of the file", variant(**{"  web: {}\n": ""})),
    ("private network moved", variant(**{
        "address: 10.1.0.1/16": "address: 10.2.0.1/16", "    ipv4: 10.1.0.2\n": ""})),
    ("ssh keys", variant(**{"  vcpus: 1\n": "  vcpus: 1\n  ssh_keys: ['ssh-ed25519 "
                            "AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8"
                            "oO5Df a@b']\n"})),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("data-images") / "fjord.yaml"
    path.write_text(BASE)
    subprocess.run([*FJORD, "image", "build", "-c", str(path), "--for-labs"], check=True,
                   cwd=ROOT, capture_output=True, timeout=1800)


@pytest.fixture(scope="module")
def server(images: None, lab_root: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Lab, Callable[[str], str], dict[str, str]]]:
    """A converged lab with `test` and `web`, a random megabyte in each: one for the
    module (the tests run in this file's order; the last one destroys `web`)."""
    lab = Lab("t" + secrets.token_hex(4))
    directory = tmp_path_factory.mktemp("storage")
    counter = iter(range(1000))

    def write(text: str) -> str:
        path = directory / f"fjord-{next(counter)}.yaml"
        path.write_text(text)
        return str(path)

    try:
        lab.up(config=EXAMPLE, owner=os.getpid())
        apply(lab, write(BASE), ALL)
        sums = {}
        for name in NAMES:
            fjord(lab, "container", "exec", name, "--", "sh", "-c",
                  "head -c 1048576 /dev/urandom > /root/precious && sync")
            sums[name] = data_sum(lab, name)
        yield lab, write, sums
    finally:
        lab.down()


def data_sum(lab: Lab, name: str) -> str:
    """The checksum of the container's precious file, read on the host side; "" when the
    file (or the container's directory) is gone."""
    path = fjord_state(lab) / "containers" / name / "upper" / "root" / "precious"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def lost(lab: Lab, sums: dict[str, str]) -> list[str]:
    return [name for name, s in sums.items() if data_sum(lab, name) != s]


def test_configuration_changes_never_delete_a_root_filesystem(server: Any) -> None:
    lab, write, sums = server
    chosen = sample(CHANGES, 1, always=[CHANGES[2], CHANGES[6], CHANGES[9]])
    print(f"changes: {[c[0] for c in chosen]} (seed {SEED})")
    outcomes = {}
    for what, text in chosen:
        out = fjord(lab, "apply", "-c", write(text), "--yes", "--json", *only(ALL),
                    check=False, timeout=600)
        outcomes[what] = out.returncode
        assert "Traceback" not in out.stderr, f"{what}:\n{out.stderr}"
        if out.returncode != 0:
            assert "fjord: error:" in out.stderr, out.stderr
        else:
            deleted = [c for c in json.loads(out.stdout)["changes"]
                       if c["action"] == "delete" and c["resource"].startswith(
                           ("container ", "rootfs "))]
            assert not deleted, f"{what}: {deleted}"
            # applied means in force: the containers answer where the file puts them
            _, failed = checks(lab, write(text), prefixes=("",))
            if what == "ssh keys":
                # the new key's private half is not this host's: ssh must now be refused,
                # and the key be the one in the containers
                assert all("ssh with the configured key" in f["name"] for f in failed), failed
                keys = fjord(lab, "container", "exec", "web", "--", "cat",
                             "/root/.ssh/authorized_keys").stdout
                assert "AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r" in keys, keys
                failed = []
            assert not failed, f"{what}: applied, but fjord check fails: {failed}"
        assert not lost(lab, sums), f"{what}: data lost in {lost(lab, sums)}"
        record("data.config_changes", detail=what, exit=out.returncode)
        # and back: the original file converges again, the data still there
        apply(lab, write(BASE), ALL)
        assert not lost(lab, sums), f"back from {what}: data lost in {lost(lab, sums)}"
    print(f"outcomes (exit status per change): {outcomes}")
    assert_converged(lab, write(BASE), ALL, prefixes=("",), what="after the changes")


# (allocations.json: below, a test of its own)
STATE_FILES = ("firewall.state", "host-records.json", "simulated-packages.json")
GARBAGE = {"truncated": b'{"version": 1, "contai', "empty": b"", "binary": b"\x00\xff" * 64,
           "not an object": b"[1, 2, 3]\n"}


def test_corrupt_state_files_are_detected_and_rebuilt(server: Any) -> None:
    lab, write, sums = server
    config = write(BASE)
    before = listing(lab, config)
    state = fjord_state(lab)
    for kind in sample(list(GARBAGE), 1, always=["truncated"]):
        garbage = GARBAGE[kind]
        for name in STATE_FILES:
            if (state / name).exists():
                (state / name).write_bytes(garbage)
        out = fjord(lab, "plan", "-c", config, "--json", check=False)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        apply(lab, config, ALL)
        assert_converged(lab, config, ALL, prefixes=("",), what=f"state files {kind}")
        for name in STATE_FILES:
            if (state / name).exists() and garbage:
                json.loads((state / name).read_text())  # rebuilt: valid again
        assert listing(lab, config) == before, f"{kind}: addresses changed"
        assert not lost(lab, sums)
        record("data.corrupt_state_files_rebuilt", len(STATE_FILES), detail=kind)
    kept = sorted(p.name for p in state.glob("*.corrupt"))
    assert kept, "no corrupt file was kept for inspection"


def test_addresses_survive_a_lost_allocations_file(server: Any) -> None:
    lab, write, sums = server
    # web on an address that is not the lowest free one (as after removals), and a kept
    # container `a` left out of the file
    moved = write(variant(**{"  web: {}\n": "  web: {ipv4: 10.1.0.50}\n"}) + "  a: {}\n")
    apply(lab, moved, ALL)
    apply(lab, write(BASE + "  a: {}\n"), ALL)  # web keeps 10.1.0.50: remembered
    before = listing(lab, write(BASE + "  a: {}\n"))
    (fjord_state(lab) / "allocations.json").write_bytes(b"{garbage")
    later = write(BASE + "  b: {}\n")  # `a` left out (kept), `b` arrives
    apply(lab, later, ALL)
    after = listing(lab, later)
    problems = [f"{n}: {before[n]} -> {after.get(n)}" for n in ("test", "web")
                if after.get(n) != before[n]]
    taken = {v for n in ("a", "web", "test") for v in before[n]}
    if set(after["b"]) & taken:
        problems.append(f"b got {after['b']}, already used by a running container")
    assert not problems, problems


def listing(lab: Lab, config: str) -> dict[str, tuple[str, str]]:
    """Each container's IPv4 and IPv6, as `fjord container list` reports them (kept
    containers from libvirt's and the containers' own records)."""
    rows = json.loads(fjord(lab, "container", "list", "-c", config, "--json").stdout)
    out = {}
    for c in rows["containers"]:
        if c["ipv4"] is None:  # a kept container: the file does not say; ask it
            addr = fjord(lab, "container", "exec", c["name"], "--", "ip", "-j", "addr",
                         "show", "eth0").stdout
            infos = json.loads(addr)[0]["addr_info"]
            v4 = next(a["local"] for a in infos if a["family"] == "inet")
            v6 = next(a["local"] for a in infos if a["family"] == "inet6"
                      and not a["local"].startswith("fe80"))
            out[c["name"]] = (v4, v6)
        else:
            out[c["name"]] = (c["ipv4"], c["ipv6"])
    return out


def test_a_corrupt_container_record_is_rebuilt(server: Any) -> None:
    lab, write, sums = server
    config = write(BASE)
    record_file = fjord_state(lab) / "containers" / "web" / "container.json"
    good = record_file.read_bytes()
    record_file.write_bytes(b"{oops")
    try:
        out = fjord(lab, "apply", "-c", config, "--yes", check=False)
        assert out.returncode == 0, out.stderr
        assert_converged(lab, config, ALL, prefixes=("",), what="container.json rebuilt")
        assert not lost(lab, sums)
    finally:
        if record_file.read_bytes() == b"{oops":
            record_file.write_bytes(good)  # for the next tests of this module


def test_destroying_and_pruning_need_an_explicit_flag(server: Any) -> None:
    lab, write, sums = server
    without_web = write(variant(**{"  web: {}\n": ""}))
    # left out of the file: kept, with its data, and the plan says how to remove it
    plan = json.loads(fjord(lab, "plan", "-c", without_web, "--json").stdout)
    assert any("--prune" in w for w in plan.get("warnings", [])), plan
    apply(lab, without_web, ALL)
    assert not lost(lab, sums)
    # destroy without --yes (no terminal): refused, nothing lost
    refused = fjord(lab, "container", "destroy", "web", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr, refused.stderr
    assert not lost(lab, sums)
    # prune of images: a dry run keeps every image a container uses
    dry = json.loads(fjord(lab, "image", "prune", "-c", without_web, "-n", "--json").stdout)
    in_use = {json.loads((p / "container.json").read_text())["image"]
              for p in (fjord_state(lab) / "containers").iterdir() if p.name != ".trash"}
    assert not in_use & {i["key"] for i in dry["removed"]}, dry
    # only --prune removes it
    changes = apply(lab, without_web, ALL, "--prune")
    assert [c["action"] for c in changes if c["resource"] == "container web"] == ["delete"]
    assert data_sum(lab, "web") == "" and data_sum(lab, "test") == sums["test"]
    record("data.explicit_flag_checks", 4)
