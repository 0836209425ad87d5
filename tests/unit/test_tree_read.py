"""Reading a container's root: only regular files of at most MAX_READ bytes, never
blocking, never following a link; bytes that are not UTF-8 are drift, not a crash."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from test_containers_customize import desired, image_skeleton

from fjord.containers import customize
from fjord.containers.tree import MAX_READ, NotReadable, Refused, Tree, UnsafePath


def read_in_thread(tree: Tree, rel: str) -> object:
    """Tree.read in a thread that must finish: a blocked open would fail the test
    instead of hanging it (the thread is a daemon)."""
    result: list[object] = []

    def work() -> None:
        try:
            result.append(tree.read(rel))
        except Exception as exc:  # handed back
            result.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"reading {rel} blocked"
    return result[0]


def test_a_regular_file_is_read_as_bytes(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_bytes(b"caf\xe9\n")
    assert Tree(tmp_path).read("/etc/hosts") == b"caf\xe9\n"
    assert Tree(tmp_path).read("/etc/absent") is None
    assert Tree(tmp_path).read("/nowhere/absent") is None


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/hostname")
    result = read_in_thread(Tree(tmp_path), "/etc/hostname")
    assert isinstance(result, NotReadable) and isinstance(result, Refused)
    assert "a FIFO, not a regular file" in result.message
    assert result.message.startswith(f"{tmp_path}/etc/hostname is ")


def test_a_device_a_socket_and_a_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "etc/shadow"))
        tree = Tree(tmp_path)
        with pytest.raises(NotReadable, match="a socket"):
            tree.read("/etc/shadow")
    with pytest.raises(NotReadable, match="a directory"):
        tree.read("/etc/hosts")
    if os.geteuid() == 0:
        os.mknod(tmp_path / "etc/hostname", 0o600 | 0o020000, os.makedev(1, 3))  # /dev/null
        with pytest.raises(NotReadable, match="a character device"):
            tree.read("/etc/hostname")


def test_a_file_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    with open(tmp_path / "etc/hosts", "wb") as fh:
        fh.truncate(200 << 20)  # sparse: 200 MB that take no disk
    with pytest.raises(NotReadable, match=r"too large \(200 MiB\)"):
        Tree(tmp_path).read("/etc/hosts")
    (tmp_path / "etc/hosts").write_bytes(b"x" * MAX_READ)
    assert len(Tree(tmp_path).read("/etc/hosts") or b"") == MAX_READ
    with pytest.raises(NotReadable, match="too large"):
        Tree(tmp_path).read("/etc/hosts", limit=10)


def test_a_link_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.write_text("the host's\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").symlink_to(outside)
    assert Tree(root).read("/etc/hosts") is None  # a link is not ours to read
    (root / "secret").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        Tree(root).read("/secret/host-secret")


def test_pending_and_customize_take_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    root = image_skeleton(tmp_path / "root")
    (root / "etc/shadow").write_bytes(b"root:$6$x$y:20000:0:99999:7:::\n"
                                      b"tenant:\xff\xfe:1::::::\n")
    (root / "etc/hosts").write_bytes(b"10.9.9.9\tcaf\xe9\n")
    d = desired(tmp_path)
    todo = customize.pending(root, d.container("test"), d)
    assert "/etc/hosts" in todo and "/etc/shadow" in todo
    customize.customize(root, d.container("test"), d)
    # root locked, the tenant's own line kept byte for byte
    assert (root / "etc/shadow").read_bytes() == (b"root:*:20000:0:99999:7:::\n"
                                                  b"tenant:\xff\xfe:1::::::\n")
    assert b"caf" not in (root / "etc/hosts").read_bytes()
    assert customize.pending(root, d.container("test"), d) == []


def test_a_fifo_in_a_root_makes_pending_refuse_not_hang(tmp_path: Path) -> None:
    root = image_skeleton(tmp_path / "root")
    (root / "etc/hostname").unlink()
    os.mkfifo(root / "etc/hostname")
    d = desired(tmp_path)
    result: list[object] = []

    def work() -> None:
        try:
            result.append(customize.pending(root, d.container("test"), d))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert isinstance(result[0], NotReadable) and "/etc/hostname" in result[0].message




def test_status_shows_a_refused_root_on_its_container() -> None:
    from fjord.engine.change import Unreadable
    from fjord.status import _with_problems

    items = _with_problems([{"name": "a"}, {"name": "b"}, {"name": "ab"}], [
        Unreadable("rootfs a", "root of a: /x/etc/hostname is a FIFO, not a regular file"),
        Unreadable("service libvirtd", "cannot tell")])
    assert items[0]["problems"] == ["root of a: /x/etc/hostname is a FIFO, not a regular file"]
    assert "problems" not in items[1] and "problems" not in items[2]
