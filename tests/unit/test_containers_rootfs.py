"""Root filesystems without mounting: layout, records, overlay options, copies, the
libvirt hook's decisions. (Mounting is tested in tests/lab/test_images.py, inside a
private mount namespace.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from told import tell

from fjord.containers import hook, rootfs
from fjord.containers.image import Image
from fjord.errors import FjordError
from fjord.state import records


def fake_image(tmp_path: Path, key: str = "bookworm-amd64-0123456789abcdef") -> Image:
    path = tmp_path / "images" / key
    (path / "rootfs/etc").mkdir(parents=True)
    (path / "rootfs/usr/sbin").mkdir(parents=True)
    (path / "rootfs/etc/hostname").write_text("localhost\n")
    os.symlink("usr/sbin", path / "rootfs/sbin")
    meta = {"key": key, "size": 1, "created": time.time()}
    (path / "meta.json").write_text(json.dumps(meta))
    return Image(key, path, meta)


def test_layout():
    lay = rootfs.RootfsLayout.of("web", Path("/s/containers"))
    assert (lay.upper, lay.work, lay.rootfs, lay.record) == (
        Path("/s/containers/web/upper"), Path("/s/containers/web/work"),
        Path("/s/containers/web/rootfs"), Path("/s/containers/web/container.json"))


def test_overlay_options():
    lay = rootfs.RootfsLayout.of("web", Path("/var/lib/fjord/containers"))
    assert rootfs.overlay_options(lay, Path("/var/lib/fjord/images/k/rootfs")) == (
        "lowerdir=/var/lib/fjord/images/k/rootfs,upperdir=/var/lib/fjord/containers/web/upper,"
        "workdir=/var/lib/fjord/containers/web/work")
    for bad in ("/tmp/a,b", "/tmp/a:b", "/tmp/a b"):
        with pytest.raises(FjordError):
            rootfs.overlay_options(rootfs.RootfsLayout.of("web", Path(bad)), Path("/x"))


def test_mounted_reads_this_namespace():
    assert rootfs.mounted(Path("/"))
    assert not rootfs.mounted(Path("/nonexistent/fjord"))


def test_copy_mode_makes_an_independent_copy_and_records_it(tmp_path):
    img = fake_image(tmp_path)
    base = tmp_path / "containers"
    lay = rootfs.prepare("web", img, "copy", base)
    assert (lay.rootfs / "etc/hostname").read_text() == "localhost\n"
    assert os.readlink(lay.rootfs / "sbin") == "usr/sbin"
    (lay.rootfs / "etc/hostname").write_text("web\n")
    assert (img.rootfs / "etc/hostname").read_text() == "localhost\n"
    record = rootfs.read_record(lay)
    assert record is not None and record.mode == "copy" and record.image == img.key
    assert rootfs.all_records(base) == [record]
    assert oct(lay.base.stat().st_mode & 0o777) == "0o700"
    # again: nothing to do, the copy is kept
    assert rootfs.prepare("web", img, "copy", base) == lay
    assert (lay.rootfs / "etc/hostname").read_text() == "web\n"
    assert rootfs.disk_usage(lay) > 0
    assert rootfs.destroy("web", base) and not lay.base.exists()
    assert not rootfs.destroy("web", base)


def test_a_container_keeps_its_image_and_mode(tmp_path):
    base = tmp_path / "containers"
    rootfs.prepare("web", fake_image(tmp_path), "copy", base)
    with pytest.raises(FjordError, match="cannot become copy on"):
        rootfs.prepare("web", fake_image(tmp_path, "bookworm-amd64-ffffffffffffffff"), "copy",
                       base)


def test_an_interrupted_copy_is_redone(tmp_path):
    img = fake_image(tmp_path)
    base = tmp_path / "containers"
    lay = rootfs.RootfsLayout.of("web", base)
    (lay.rootfs / "etc").mkdir(parents=True)  # a copy that never got its record
    rootfs.prepare("web", img, "copy", base)
    assert (lay.rootfs / "etc/hostname").exists()


def test_a_corrupt_record_with_no_root_behind_it_is_reported(tmp_path):
    lay = rootfs.RootfsLayout.of("web", tmp_path)
    lay.base.mkdir()
    lay.record.write_text("{")
    with pytest.raises(FjordError, match="container.json is corrupt.*holds no root"):
        rootfs.read_record(lay)


@pytest.mark.parametrize("garbage", [b"{", b"", b"[1]", b'{"name": "web", "mode": "zip"}',
                                     b"\x00\xff"])
def test_a_corrupt_overlay_record_is_rebuilt_and_its_data_kept(tmp_path, garbage):
    base = tmp_path / "containers"
    lay = rootfs.RootfsLayout.of("web", base)
    for d in (lay.upper / "root", lay.work, lay.rootfs):
        d.mkdir(parents=True)
    (lay.upper / "root/data").write_text("precious")
    lay.record.write_bytes(garbage)
    record = rootfs.read_record(lay)
    # upper/ says overlay; not mounted, so the image is unknown (nothing written yet)
    assert record is not None and record.mode == "overlay" and record.image == ""
    assert "rebuilt from what exists" in (record.rebuilt or "")
    assert lay.record.read_bytes() == garbage
    assert [r.name for r in rootfs.all_records(base)] == ["web"]
    # making the root again adopts the image the file asks for, keeps the bad file aside
    img = fake_image(tmp_path)
    adopted = rootfs.adopt(lay, record, img)
    assert (adopted.image, adopted.lower, adopted.rebuilt) == (img.key, str(img.rootfs), None)
    assert rootfs.read_record(lay) == adopted
    assert (base / "web/container.json.corrupt").read_bytes() == garbage
    assert (lay.upper / "root/data").read_text() == "precious"


def test_a_lost_copy_record_is_rebuilt(tmp_path):
    img = fake_image(tmp_path)
    base = tmp_path / "containers"
    lay = rootfs.prepare("web", img, "copy", base)
    lay.record.unlink()
    record = rootfs.read_record(lay)
    assert record is not None and record.mode == "copy" and "missing" in (record.rebuilt or "")
    # prepare adopts it (the image the file asks for) and keeps the copy as it is
    (lay.rootfs / "etc/hostname").write_text("web\n")
    rootfs.prepare("web", img, "copy", base)
    again = rootfs.read_record(lay)
    assert again is not None and again.rebuilt is None and again.image == img.key
    assert (lay.rootfs / "etc/hostname").read_text() == "web\n"


def test_a_record_keeps_the_addresses_for_the_allocations(tmp_path):
    img = fake_image(tmp_path)
    base = tmp_path / "containers"
    lay = rootfs.prepare("web", img, "copy", base)
    rootfs.prepare("db", img, "copy", base)
    addrs = {"ipv4": "10.1.0.50", "mac_private": "52:54:00:aa:bb:cc"}
    assert rootfs.save_addresses(lay, addrs)
    assert not rootfs.save_addresses(lay, addrs)
    record = rootfs.read_record(lay)
    assert record is not None and record.addresses == addrs and record.image == img.key
    assert records.recorded_addresses(base=base) == {"web": addrs}
    assert records.recorded_addresses(skip={"web"}, base=base) == {}


@pytest.fixture
def ours(state_dir):
    """Container `web` is fjord's (it has a directory in the state), `other` is not."""
    (state_dir / "containers" / "web").mkdir(parents=True)
    return state_dir


def test_hook_mounts_on_prepare_begin_only(monkeypatch, ours):
    calls = []
    monkeypatch.setattr(rootfs, "ensure_mounted", lambda name: calls.append(name) or True)
    assert hook.main(["web", "start", "begin", "-"]) == 0
    assert calls == []
    assert hook.main(["web", "prepare", "begin", "-"]) == 0
    assert calls == ["web"]


def test_hook_leaves_other_domains_alone(monkeypatch, ours):
    """Domains fjord did not make cost libvirt no work (and no import) at all."""
    from fjord.containers import limits

    calls = []
    monkeypatch.setattr(rootfs, "ensure_mounted", lambda name: calls.append(name) or True)
    monkeypatch.setattr(limits, "release", lambda name: calls.append(name) or [])
    monkeypatch.setenv(hook.OFFLOAD_ENV, "1")
    for op in (["prepare", "begin"], ["started", "begin"], ["release", "end"]):
        assert hook.main(["other", *op, "-"]) == 0
        assert hook.main(["../web", *op, "-"]) == 0
    assert calls == []
    assert hook.main(["web", "release", "end", "-"]) == 0
    assert calls == ["web"]


def test_hook_started_needs_the_container_init(monkeypatch, ours, capsys):
    monkeypatch.setenv(hook.OFFLOAD_ENV, "1")
    # no libvirt record of the container's controller: a clear failure, not a traceback
    assert hook.main(["web", "started", "begin", "-"]) == 1
    assert "checksum offload" in capsys.readouterr().err
    monkeypatch.delenv(hook.OFFLOAD_ENV)
    assert hook.main(["web", "started", "begin", "-"]) == 0


def test_hook_failure_stops_the_start(monkeypatch, capsys, ours):
    def fail(name):
        raise FjordError("image gone")

    monkeypatch.setattr(rootfs, "ensure_mounted", fail)
    assert hook.main(["web", "prepare", "begin", "-"]) == 1
    assert "image gone" in capsys.readouterr().err


def test_hook_ignores_domains_fjord_did_not_make(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    assert not rootfs.ensure_mounted("not-ours")


def hook_at(tmp_path, python=sys.executable, offload_off=False):
    script = tmp_path / "50-fjord"
    script.write_text(hook.hook_script(python=python, state=tmp_path / "st ate",
                                       offload_off=offload_off))
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "FJORD_STATE_DIR"}

    def run(*args):
        return subprocess.run([str(script), *args, "-"], input="<domain/>",
                              capture_output=True, text=True, env=env, timeout=60)

    return run


def test_hook_script_hands_fjords_containers_to_this_python_with_its_state(tmp_path):
    run = hook_at(tmp_path)
    # an overlay container (upper/) whose record cannot tell its image: Python runs,
    # with the state directory (which has a blank: quoted), and refuses the start
    web = tmp_path / "st ate" / "containers" / "web"
    (web / "upper").mkdir(parents=True)
    (web / "rootfs").mkdir()
    (web / "container.json").write_text("{")
    out = run("web", "prepare", "begin")
    assert out.returncode == 1 and "cannot mount the root of container web" in out.stderr
    assert "rebuilt from what exists" in out.stderr


def test_hook_script_starts_no_python_for_other_domains_or_moments(tmp_path):
    """libvirt waits for the hook at every start and stop: for a domain fjord did not
    make, or a moment fjord does not act on, the shell answers alone (a Python that does
    not exist is never started)."""
    run = hook_at(tmp_path, python=str(tmp_path / "no-such-python"))
    (tmp_path / "st ate" / "containers" / "web" / "rootfs").mkdir(parents=True)
    for args in (["other", "prepare", "begin"], ["other", "release", "end"],
                 ["web", "start", "begin"], ["web", "stopped", "end"],
                 ["web", "started", "begin"],           # offload off not asked for
                 ["web", "prepare", "begin"],           # a copy: nothing to mount
                 ["../web", "prepare", "begin"], [".trash", "release", "end"]):
        out = run(*args)
        assert out.returncode == 0, (args, out.stderr)
    # where fjord acts, the script does hand over (and fails here: no such Python)
    assert run("web", "release", "end").returncode != 0
    offload = hook_at(tmp_path, python=str(tmp_path / "no-such-python"), offload_off=True)
    assert offload("web", "started", "begin").returncode != 0
    # with the anti-spoofing state, every start of fjord's containers rebuilds the flows
    assert run("web", "start", "begin").returncode == 0
    (tmp_path / "st ate" / "port-guard.json").write_text("{}")
    assert run("web", "start", "begin").returncode != 0
    assert run("other", "start", "begin").returncode == 0


def test_hook_fails_a_start_whose_port_cannot_be_guarded(tmp_path):
    """A container whose anti-spoofing flows cannot be set does not run (fail closed)."""
    run = hook_at(tmp_path)
    (tmp_path / "st ate" / "containers" / "web" / "rootfs").mkdir(parents=True)
    (tmp_path / "st ate" / "port-guard.json").write_text('{"bridge": "br-int"}')
    out = run("web", "start", "begin")
    assert out.returncode == 1
    assert "container web: cannot set the anti-spoofing flows at its start" in out.stderr


def test_offload_off_in_another_network_namespace():
    """The ioctl path, on a veth in a network namespace of its own (a sleeping process
    holds it), as root; the machine's own namespace is not touched."""
    import shutil

    from fjord.containers.offload import OffloadError, tx_checksum_off

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    holder = subprocess.Popen(["unshare", "--net", "--", "sh", "-c",
                               "ip link add name va type veth peer name vb && ip link set va up "
                               "&& echo ready && exec sleep 60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        pid = holder.pid
        ns = ["nsenter", f"--target={pid}", "--net", "--"]
        assert tx_checksum_off(pid, ["va", "vc"], optional=["vc"]) == ["va"]
        assert tx_checksum_off(pid, ["va"]) == []          # already off: nothing to do
        if shutil.which("ethtool"):
            shown = subprocess.run([*ns, "ethtool", "-k", "va"], capture_output=True,
                                   text=True, check=True).stdout
            assert "tx-checksumming: off" in shown
        with pytest.raises(OffloadError, match="no interface vc"):
            tx_checksum_off(pid, ["vc"])
        with pytest.raises(OffloadError):
            tx_checksum_off(2**22 + 7, ["va"])          # no such process
    finally:
        holder.kill()
        holder.wait()


def test_destroy_frees_the_name_at_once_and_deletes_in_the_background(tmp_path):
    img = fake_image(tmp_path)
    base = tmp_path / "containers"
    lay = rootfs.prepare("web", img, "copy", base)
    (lay.rootfs / "root").mkdir(exist_ok=True)
    (lay.rootfs / "root/data").write_text("x" * 1000)
    # a leftover of an interrupted earlier deletion
    (base / rootfs.TRASH / "old.1" / "f").mkdir(parents=True)
    assert rootfs.destroy("web", base)
    assert not lay.base.exists() and rootfs.all_records(base) == []
    assert records.recorded_addresses(base=base) == {}
    deadline = time.monotonic() + 20
    while any((base / rootfs.TRASH).iterdir()):
        assert time.monotonic() < deadline, list((base / rootfs.TRASH).iterdir())
        time.sleep(0.02)
    # the name can be used again right away, and waiting works too
    rootfs.prepare("web", img, "copy", base)
    assert rootfs.destroy("web", base, background=False)
    assert list((base / rootfs.TRASH).iterdir()) == []
