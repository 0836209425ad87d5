"""fjord's environment is built once, at the command-line edge (fjord.environment):
nothing below the command line reads the process's variables, and production code does
not reach into the lab."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from fjord import environment
from fjord.cli import system_environment
from fjord.environment import Environment
from fjord.errors import FjordError

SRC = Path(__file__).resolve().parents[2] / "src"

# Who may read os.environ, and why.
ENVIRON_READERS = {
    "fjord/cli.py": "the command-line edge: builds the Environment",
    "fjord/commands/lab.py": "the lab's command line: the file a lab is made from",
    "fjord/runner.py": "child processes inherit fjord's variables (runner.child_env)",
    "fjord/containers/hook.py": "the libvirt hook's own entry point",
    "fjord/net/switchover_guard.py": "the switchover guard's own entry point",
    "fjord/containers/nsexec.py": "a program of its own; hands the command PATH, TERM...",
}
# Who may import fjord.lab outside it: the command line (lazy commands, the lab's
# environment builder) and `fjord image build --for-labs`.
LAB_IMPORTERS = {"fjord/cli.py", "fjord/commands/image.py", "fjord/commands/lab.py"}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted((SRC / "fjord").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


def _environ_uses(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "putenv",
                                                              "environb", "unsetenv"}
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in {"environ", "getenv", "environb"} for a in node.names):
            lines.append(node.lineno)
    return lines


def _lab_imports(tree: ast.Module) -> list[int]:
    def lab(name: str | None) -> bool:
        return name is not None and (name == "fjord.lab" or name.startswith("fjord.lab."))

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(lab(a.name) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (
                lab(node.module) or (node.module == "fjord"
                                     and any(a.name == "lab" for a in node.names))):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and lab(a.value)
                for a in node.args):  # importlib.import_module("fjord.lab...")
            lines.append(node.lineno)
    return lines


def test_only_the_edge_reads_the_process_environment() -> None:
    found = [f"{rel}:{line}" for rel, tree in _modules() for line in _environ_uses(tree)
             if rel not in ENVIRON_READERS and not rel.startswith("fjord/lab/")]
    assert not found, f"os.environ read below the command line: {found}"


def test_production_code_does_not_import_the_lab() -> None:
    found = [f"{rel}:{line}" for rel, tree in _modules() for line in _lab_imports(tree)
             if rel not in LAB_IMPORTERS and not rel.startswith("fjord/lab/")]
    assert not found, f"fjord.lab imported by production code: {found}"


def test_the_scan_sees_what_it_forbids() -> None:
    tree = ast.parse("import os, importlib\nfrom os import environ\nos.environ.get('X')\n"
                     "os.getenv('Y')\nimport fjord.lab.services\nfrom fjord.lab import x\n"
                     "from fjord import lab\nimportlib.import_module('fjord.lab.services')\n")
    assert sorted(_environ_uses(tree)) == [2, 3, 4]
    assert sorted(_lab_imports(tree)) == [5, 6, 7, 8]


def test_the_environment_comes_from_the_variables() -> None:
    env = system_environment({
        "FJORD_STATE_DIR": "/srv/state", "FJORD_OVSDB": "/run/x.sock",
        "FJORD_LIBVIRT_URI": "lxc:///embed?root=/x", "FJORD_PACKAGE_MANAGER": "simulate",
        "FJORD_CONFIG": "site.yaml", "FJORD_SSH": "ssh -i key", "TERM": "screen"})
    assert env.state_dir == Path("/srv/state") and env.images_dir == Path("/srv/state/images")
    assert env.ovsdb_socket == "/run/x.sock" and env.libvirt_uri == "lxc:///embed?root=/x"
    assert env.package_manager_name == "simulate" and env.service_manager_name == "systemd"
    assert (env.config, env.ssh, env.term) == ("site.yaml", "ssh -i key", "screen")
    moved = Environment.from_system({"FJORD_IMAGES_DIR": "/cache"})
    assert moved.images_dir == Path("/cache")
    # a child fjord (the switchover guard) is told the same
    assert Environment.from_system(env.variables()).state_dir == env.state_dir
    assert Environment.from_system(env.variables()).ovsdb_socket == env.ovsdb_socket
    with pytest.raises(FjordError, match="not a service manager"):
        Environment.from_system({"FJORD_SERVICE_MANAGER": "lab"})  # only the CLI knows it


def test_the_environment_is_frozen() -> None:
    env = Environment()
    with pytest.raises(AttributeError):
        env.state_dir = Path("/tmp")  # type: ignore[misc]


def test_drivers_and_state_follow_the_installed_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fjord.containers.image import images_dir
    from fjord.containers.libvirt import Libvirt
    from fjord.engine.resource import Context
    from fjord.net.ovs import Ovs
    from fjord.state import state_dir

    environment.use(Environment(state_dir=tmp_path, ovsdb_socket="/run/o.sock",
                                libvirt_uri="lxc:///x"))
    monkeypatch.setenv("FJORD_STATE_DIR", "/elsewhere")  # read only at the edge
    assert state_dir() == tmp_path and images_dir() == tmp_path / "images"
    assert Ovs().socket == "/run/o.sock" and Libvirt().uri == "lxc:///x"
    assert Context(None).env.state_dir == tmp_path  # type: ignore[arg-type]


def test_the_process_is_told_by_its_variables(tmp_path: Path) -> None:
    """The CLI contract stays: FJORD_* tell `fjord` its environment, for shell
    completion too (which runs no command); a bad one is an error before anything."""
    import subprocess
    import sys

    (tmp_path / "containers" / "web" / "upper").mkdir(parents=True)
    env = {**os.environ, "FJORD_STATE_DIR": str(tmp_path), "_FJORD_COMPLETE": "bash_complete",
           "COMP_WORDS": "fjord container start w", "COMP_CWORD": "3"}
    out = subprocess.run([sys.executable, "-m", "fjord"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["plain,web"], out
    env = {**os.environ, "FJORD_SERVICE_MANAGER": "openrc"}
    out = subprocess.run([sys.executable, "-m", "fjord", "validate", "-c", "/nonexistent"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and "FJORD_SERVICE_MANAGER='openrc' is not a service manager" \
        in out.stderr
