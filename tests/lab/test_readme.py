"""The README's commands, run as a reader would: the demo (and its removal), and the
walkthrough's lab block. `./scripts/test` is the command running this very test."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FJORD = str(REPO / ".venv" / "bin" / "fjord")


def sh_blocks() -> list[list[str]]:
    """The command lines of the README's ```sh blocks (comments stripped)."""
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [[line.split("#")[0].strip() for line in b.splitlines()
             if line.split("#")[0].strip()] for b in blocks]


def test_the_readme_opens_with_the_two_commands():
    first = sh_blocks()[0]
    assert first == ["./scripts/demo", "./scripts/test"]
    assert "exec ./scripts/test" in (REPO / ".ci" / "run").read_text()


def test_the_demo_and_its_removal(lab_root):
    Lab("demo").down()  # a demo left from before would make this a re-run
    try:
        out = subprocess.run(["./scripts/demo"], cwd=REPO, capture_output=True, text=True,
                             timeout=1200)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert re.search(r"^\d+ passed, 0 failed$", out.stdout, flags=re.M), out.stdout
        assert "3 packets transmitted, 3 received" in out.stdout   # ping6 -c3 from `test`
        assert "2 packets transmitted, 2 received" in out.stdout   # ping -4 -c2
        assert "No changes: the host is as declared." in out.stdout
        status = subprocess.run([FJORD, "lab", "exec", "--name", "demo", "--", FJORD,
                                 "status"], capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and "oslo.example.net" in status.stdout
        again = subprocess.run(["./scripts/demo"], cwd=REPO, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0 and "Applied" not in again.stdout
    finally:
        down = subprocess.run(["./scripts/demo", "--down"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert Lab("demo").status()["state"] == "absent"


def test_the_walkthrough_lab_block(lab_root):
    (block,) = [b for b in sh_blocks() if any("fjord lab up" in line for line in b)]
    name = "rd" + secrets.token_hex(3)
    subprocess.run([FJORD, "image", "build", "-c", "examples/lab.yaml", "--for-labs"],
                   cwd=REPO, check=True, capture_output=True, timeout=900)
    try:
        for line in block:
            argv = shlex.split(line.replace("my-server.yaml", "examples/lab.yaml"))
            assert argv[:2] == ["fjord", "lab"], line
            argv = [FJORD, "lab", argv[2], "--name", name, *argv[3:]]
            argv = [FJORD if a == "fjord" else a for a in argv]
            out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    finally:
        Lab(name).down()
    assert Lab(name).status()["state"] == "absent"
