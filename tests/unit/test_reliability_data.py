"""Data safety without root: fjord's files are written atomically (a writer killed with
SIGKILL at random moments leaves the old file or the new one, never a mix), a replaced
file is always backed up (also when it changes twice within a second), and a corrupt
state file is detected, set aside and rebuilt.

The lab side (tests/lab/test_reliability_storage.py) does the same with a real server."""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from faults import FULL, record
from told import tell

from fjord.engine.resource import Context
from fjord.host.files import File
from fjord.state import atomic_write, read_json, write_json

KILLS = 400 if FULL else 60

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from fjord.state import atomic_write
    path = Path(sys.argv[1])
    big = int(sys.argv[2])
    n = 0
    while True:
        n += 1
        # every version is one repeated byte: a torn file would mix two of them
        atomic_write(path, bytes([n % 250 + 1]) * big, 0o600)
""")


def test_atomic_writes_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    atomic_write(path, b"\x00" * 10, 0o600)
    rng = random.Random(8)
    torn = 0
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path),
                                 str(rng.choice([1, 4096, 1 << 20]))])
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = path.read_bytes()
        if not data or len(set(data)) != 1:
            torn += 1
        assert path.stat().st_mode & 0o777 == 0o600
    litter = [p.name for p in tmp_path.iterdir() if p.name != "state.bin"]
    record("data.atomic_write_kills", KILLS, torn=torn, temporary_files_left=len(litter))
    print(f"{KILLS} writers killed: {torn} torn files, {len(litter)} temporary files left")
    assert torn == 0
    # a writer killed between creating its temporary file and renaming it leaves that
    # file behind; it is never read (dot-names, no extension any reader wants)
    assert all(name.startswith(".state.bin.") for name in litter)


def test_a_corrupt_state_file_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "allocations.json"
    for garbage in (b"", b"{", b"[1, 2]", b"\x00\xff" * 100, b'"just a string"',
                    b"{\"containers\": 12}\n" + b"\x00" * 10):
        path.write_bytes(garbage)
        assert read_json(path) is None or not isinstance(read_json(path), list)
        write_json(path, {"version": 1, "containers": {}})
        assert json.loads(path.read_text())["version"] == 1
        corrupt = path.with_name("allocations.json.corrupt")
        try:
            json.loads(garbage)
            parsed = True
        except ValueError:
            parsed = False
        if not parsed:
            assert corrupt.read_bytes() == garbage, "the corrupt file was not kept"
        corrupt.unlink(missing_ok=True)
    record("data.corrupt_state_files_rebuilt", 6, detail="unit: read_json/write_json")


def _file(path: Path, content: str, state: Path) -> File:
    return File(path, content, mode=0o644, owner=pwd.getpwuid(os.getuid()).pw_name)


def _apply(resource: File) -> None:
    ctx = Context.__new__(Context)  # File needs nothing from the context
    for change in resource.changes(ctx):
        change.run(ctx)


def test_every_replaced_version_is_backed_up_even_within_one_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's original file, and each version fjord wrote since, can be found
    under /var/lib/fjord/backups: none is overwritten by a later backup."""
    state = tmp_path / "state"
    tell(monkeypatch, FJORD_STATE_DIR=str(state))
    target = tmp_path / "etc" / "network" / "interfaces"
    target.parent.mkdir(parents=True)
    target.write_text("# the provider's original\n")
    versions = ["# the provider's original\n"]
    for i in range(4):  # four applies with four configurations, in quick succession
        content = f"# fjord, version {i}\n"
        _apply(_file(target, content, state))
        versions.append(content)
    assert target.read_text() == versions[-1]
    backups = sorted((state / "backups").iterdir())
    held = {p.read_text() for p in backups}
    lost = [v for v in versions[:-1] if v not in held]
    for p in backups:
        assert p.stat().st_mode & 0o777 == 0o600
    record("data.backups_checked", len(versions) - 1, lost=len(lost))
    assert not lost, f"backups overwritten within the same second: {lost}"
