"""fjord(8) is written from the command line's definitions and renders cleanly."""

from __future__ import annotations

import subprocess

import click

from fjord import manpage
from fjord.cli import cli


def _commands(group: click.Group, ctx: click.Context, path: list[str]) -> list[str]:
    out = []
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        assert sub is not None
        out.append(" ".join([*path, name]))
        if isinstance(sub, click.Group):
            out += _commands(sub, click.Context(sub, info_name=name, parent=ctx), [*path, name])
    return out


def test_every_command_has_its_section():
    page = manpage.render()
    commands = _commands(cli, click.Context(cli, info_name="fjord"), [])
    assert {"apply", "plan", "container exec", "lab up", "image build"} <= set(commands)
    for command in commands:
        heading = ".SS " + manpage.escape("fjord " + command)
        assert heading + "\n" in page, f"no section for fjord {command}"


def test_text_is_never_read_as_a_request():
    assert manpage.escape(".rm x\n'so /etc/passwd") == "\\&.rm x\n\\&'so /etc/passwd"
    assert manpage.escape("a\\b --yes") == "a\\eb \\-\\-yes"


def test_renders_without_warnings(tmp_path):
    page = tmp_path / "fjord.8"
    page.write_text(manpage.render())
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
