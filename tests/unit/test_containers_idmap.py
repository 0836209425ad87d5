"""Unprivileged containers: range allocation, the domain's <idmap>, the record, and the
owner of what customisation writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fjord.containers import idmap, rootfs
from fjord.containers.domain import Domain, differences
from fjord.containers.tree import Tree
from fjord.errors import FjordError


def test_ranges_start_above_useradds_subids_and_skip_taken_and_listed_ones() -> None:
    assert idmap.allocate([], reserved=[]) == idmap.BASE
    assert idmap.BASE >= 600_100_000 + 65536  # Debian's SUB_UID_MAX
    taken = [idmap.BASE, idmap.BASE + 2 * 65536]
    assert idmap.allocate(taken, reserved=[]) == idmap.BASE + 65536
    # a hand-written /etc/subuid line overlapping the next range moves it on
    assert idmap.allocate([idmap.BASE], reserved=[(idmap.BASE + 70000, 10)]) \
        == idmap.BASE + 2 * 65536


def test_no_range_left_is_an_error() -> None:
    with pytest.raises(FjordError):
        idmap.allocate([], reserved=[(0, 1 << 32)])


def test_subid_files_are_read(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\nbroken line\nbob:165536:65536\n")
    assert idmap.subid_ranges([f, tmp_path / "missing"]) == [(100000, 65536), (165536, 65536)]


def _domain(**kw: object) -> Domain:
    base = dict(name="web", uuid="0" * 8 + "-0000-0000-0000-" + "0" * 12, memory=1 << 29,
                vcpus=1, cpu_shares=1024, root="/var/lib/fjord/containers/web/rootfs")
    base.update(kw)
    return Domain(**base)  # type: ignore[arg-type]


def test_the_idmap_is_rendered_and_read_back() -> None:
    d = _domain(idmap=1_000_065_536)
    xml = d.xml()
    assert "<uid start=\"0\" target=\"1000065536\" count=\"65536\" />" in xml
    assert "<gid start=\"0\" target=\"1000065536\" count=\"65536\" />" in xml
    assert Domain.parse(xml) == d
    assert Domain.parse(_domain().xml()).idmap is None
    assert "idmap" not in _domain().xml()


def test_a_changed_or_foreign_idmap_is_a_difference() -> None:
    assert differences(_domain(), _domain(idmap=1_000_000_000)) == [
        "user namespace: none (privileged) -> ids 1000000000-1000065535"]
    foreign = _domain(idmap=1_000_000_000).xml().replace('count="65536"', 'count="10"', 1)
    assert Domain.parse(foreign).idmap == -1
    assert differences(Domain.parse(foreign), _domain(idmap=1_000_000_000))


def test_the_record_keeps_the_range(tmp_path: Path) -> None:
    layout = rootfs.RootfsLayout.of("web", tmp_path)
    layout.base.mkdir()
    rec = rootfs.Record(name="web", mode="overlay", image="k", lower="/x", created=1.0,
                        idmap=1_000_000_000)
    rootfs.write_record(layout, rec)
    assert json.loads(layout.record.read_text())["idmap"] == 1_000_000_000
    assert rootfs.read_record(layout) == rec
    # a privileged container's record has no key at all (as before)
    rootfs.write_record(layout, rootfs.Record("web", "overlay", "k", "/x", 1.0))
    assert "idmap" not in json.loads(layout.record.read_text())
    layout.upper.mkdir()
    os.chmod(layout.upper, 0o755)
    layout.record.write_text(json.dumps({**rec.stored(), "idmap": "many"}))
    rebuilt = rootfs.read_record(layout)  # corrupt: rebuilt from what exists
    assert rebuilt is not None and rebuilt.rebuilt is not None
    assert rebuilt.idmap == (os.stat(layout.upper).st_uid or None)


def test_allocation_skips_the_ranges_of_existing_containers(tmp_path: Path) -> None:
    for name, n in (("a", idmap.BASE), ("b", None), ("c", idmap.BASE + 65536)):
        layout = rootfs.RootfsLayout.of(name, tmp_path)
        layout.base.mkdir()
        rootfs.write_record(layout, rootfs.Record(name, "overlay", "k", "/x", 1.0, idmap=n))
    got = rootfs.allocate_idmap(base=tmp_path)
    assert got not in (idmap.BASE, idmap.BASE + 65536) and got >= idmap.BASE
    assert rootfs.allocate_idmap(skip="a", base=tmp_path) in (idmap.BASE, got)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_what_the_tree_makes_is_the_ranges_root(tmp_path: Path) -> None:
    tree = Tree(tmp_path, owner=1_000_000_000)
    tree.write("/etc/new/file", b"x")
    tree.ensure_dir("/root/.ssh", 0o700)
    tree.symlink("/etc/systemd/system/x.mount", "/dev/null")
    for p in ("etc/new", "etc/new/file", "root/.ssh", "etc/systemd/system/x.mount"):
        st = os.lstat(tmp_path / p)
        assert (st.st_uid, st.st_gid) == (1_000_000_000, 1_000_000_000), p
    # a file replaced keeps its owner (a shifted /etc/shadow keeps group shadow)
    os.chown(tmp_path / "etc/new/file", 1_000_000_000, 1_000_000_042)
    tree.write("/etc/new/file", b"y", 0o640)
    st = os.stat(tmp_path / "etc/new/file")
    assert (st.st_uid, st.st_gid) == (1_000_000_000, 1_000_000_042)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_shift_tree_moves_ids_and_keeps_setuid_bits(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    f = tmp_path / "bin" / "su"
    f.write_bytes(b"")
    os.chown(f, 0, 5)
    os.chmod(f, 0o4755)
    os.symlink("su", tmp_path / "bin" / "link")
    rootfs.shift_tree(tmp_path, 1_000_000_000)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1_000_000_000, 1_000_000_005, 0o4755)
    assert os.lstat(tmp_path / "bin" / "link").st_uid == 1_000_000_000
    assert os.stat(tmp_path).st_uid == 1_000_000_000
