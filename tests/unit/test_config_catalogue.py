"""The catalogue of configuration files under configs/, run through the real command line.

Each file in configs/bad/ starts with comment lines that say what `fjord validate` must
report (exit 2):

    # expect: containers.web.ipv4        the key path a problem line starts with
    # message: 10.9.0.2 is outside …      (optional) text of that problem line
    # line: 15                           (optional) the line that problem points at

Every file in configs/good/, and both examples, must be valid (exit 0).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fjord.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BAD = sorted((HERE / "configs" / "bad").glob("*.yaml"))
GOOD = sorted((HERE / "configs" / "good").glob("*.yaml")) + [
    ROOT / "examples" / "seed.yaml",
    ROOT / "examples" / "lab.yaml",
]


@dataclass
class Expectation:
    path: str
    message: str | None = None
    line: int | None = None


def expectation(file: Path) -> Expectation:
    fields = {}
    # latin-1 reads any byte, so the header of the deliberately broken files can be read
    for text in file.read_bytes().decode("latin-1").splitlines():
        if not text.startswith("# ") or ": " not in text:
            break
        key, _, value = text[2:].partition(": ")
        fields[key] = value
    # The header is ASCII except for key paths that are themselves not ASCII.
    fields = {k: v.encode("latin-1").decode("utf-8") for k, v in fields.items()}
    return Expectation(fields["expect"], fields.get("message"),
                       int(fields["line"]) if "line" in fields else None)


def run_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   *args: str) -> tuple[int, str, str]:
    """`fjord ARGS` through fjord.cli.main, the console script's entry point."""
    monkeypatch.setattr(sys, "argv", ["fjord", *args])
    # fjord's cli() configures logging onto the (captured) stderr of this test: undo it
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        logging.root.handlers[:], logging.root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


def fjord_command() -> list[str]:
    script = Path(sys.executable).parent / "fjord"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fjord"]


def check_rejected(file: Path, code: int, out: str, err: str) -> None:
    want = expectation(file)
    assert code == 2, f"exit {code}\n{out}{err}"
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    for line in lines:
        # one problem per line, nothing that could drive the terminal
        assert line.isprintable(), repr(line)
    mine = [line for line in lines if line.startswith(f"{want.path}: ")]
    assert mine, f"no line starts with {want.path!r}:\n{err}"
    if want.message is not None:
        assert any(want.message in line for line in mine), err
    if want.line is not None:
        assert any(f"line {want.line}," in line for line in mine), err
    assert lines[-1].endswith("nothing was changed.")


def test_the_catalogue_is_big_enough_and_well_formed():
    assert len(BAD) >= 30
    for file in BAD:
        assert expectation(file).path, file


@pytest.mark.parametrize("file", BAD, ids=[f.stem for f in BAD])
def test_bad_config_is_exit_2_naming_the_key(file, monkeypatch, capsys, state_dir):
    check_rejected(file, *run_in_process(monkeypatch, capsys, "validate", "-c", str(file)))


@pytest.mark.parametrize("file", GOOD, ids=[f.stem for f in GOOD])
def test_good_config_is_valid(file, monkeypatch, capsys, state_dir):
    code, out, err = run_in_process(monkeypatch, capsys, "validate", "-c", str(file))
    assert code == 0, err
    assert out.startswith(f"{file}: valid (")
    assert not state_dir.exists(), "validate must not write any state"


@pytest.mark.parametrize("name", ["yaml-syntax", "alias-bomb", "name-control-char"])
def test_bad_config_through_the_installed_command(name, state_dir):
    file = HERE / "configs" / "bad" / f"{name}.yaml"
    proc = subprocess.run([*fjord_command(), "validate", "-c", str(file)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    check_rejected(file, proc.returncode, proc.stdout, proc.stderr)


def test_the_contract_message_exactly(monkeypatch, capsys, state_dir):
    file = HERE / "configs" / "bad" / "container-ipv4-outside.yaml"
    _, _, err = run_in_process(monkeypatch, capsys, "validate", "-c", str(file))
    assert err.splitlines()[0] == (
        "containers.web.ipv4: 10.9.0.2 is outside the private network 10.1.0.0/16 "
        f"({file}, line 15, column 5)"
    )


def test_good_example_through_the_installed_command(state_dir):
    proc = subprocess.run([*fjord_command(), "validate", "-c", "examples/lab.yaml"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "examples/lab.yaml: valid (1 container)\n"
