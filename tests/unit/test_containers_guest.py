"""The guest-side programs fjord writes (fjord/containers/guest/): the libvirt hook on
the host, fjord-init and fjord-seccomp in a container's root. Their renderings are
golden files: moving them between Python and package data changes no byte a host has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from goldens import check_golden

from fjord.containers.hook import hook_script
from fjord.containers.limits import init_script
from fjord.containers.sandbox import loader_script

GOLDEN = Path(__file__).parent / "golden" / "containers" / "guest"
PYTHON = "/opt/fjord/venv/bin/python3"
STATE = Path("/var/lib/fjord")

RENDERED = {
    "lxc-hook.sh": lambda: hook_script(python=PYTHON, state=STATE),
    "lxc-hook.offload-off.sh": lambda: hook_script(python=PYTHON, state=STATE,
                                                   offload_off=True),
    "lxc-hook.quoted.sh": lambda: hook_script(python="/opt/my venv/bin/python3",
                                              state=Path("/srv/fjord's state")),
    "fjord-init.sh": init_script,
    "fjord-seccomp.pl": loader_script,
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_guest_program_matches_golden_file(name: str) -> None:
    check_golden(GOLDEN, name, RENDERED[name]())


@pytest.mark.parametrize("name", sorted(n for n in RENDERED if n.endswith(".sh")))
@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_shell_programs_are_valid_sh(name: str, shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    path = tmp_path / name
    path.write_text(RENDERED[name]())
    out = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert path.read_text().startswith("#!/bin/sh\n")


def test_perl_loader_is_valid_perl(tmp_path: Path) -> None:
    if shutil.which("perl") is None:
        pytest.skip("no perl")
    path = tmp_path / "fjord-seccomp"
    path.write_text(loader_script())
    out = subprocess.run(["perl", "-c", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_guest_program_is_package_data() -> None:
    # what the wheel (and scripts/bundle, which installs it) ships: the templates are
    # files next to fjord.containers.guest, named in pyproject's package-data
    import tomllib

    from fjord.containers import guest

    root = Path(__file__).parents[2]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["fjord.containers.guest"]
    for name in guest.NAMES:
        assert any(Path(name).match(pattern) for pattern in shipped), name
        assert guest.template(name).startswith("#!")


def test_a_value_that_needs_quoting_is_refused_where_it_would_go_unquoted() -> None:
    with pytest.raises(ValueError, match="unquoted"):
        init_script("/sbin/init; reboot")
    with pytest.raises(ValueError, match="unquoted"):
        init_script(proc="/proc $(reboot)")
    with pytest.raises(ValueError, match="unquoted"):
        init_script(path="relative/fjord-init")


def test_a_template_and_its_values_must_agree() -> None:
    from fjord.containers import guest

    with pytest.raises(ValueError, match="missing"):
        guest.render("fjord-seccomp.pl", marker="FJORD_SECCOMP")
    with pytest.raises(ValueError, match="no guest program"):
        guest.template("../hook.py")
