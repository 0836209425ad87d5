"""fjord(8), the manual page, written from the command line's own definitions.

`python -m fjord.manpage > fjord.8` (the bundle's installer puts it in
/usr/local/share/man/man8, so `man fjord` works on a server). Every command, its usage,
help text and options come from the click objects `fjord --help` prints, so the page
cannot drift from the code; the sections around them (exit status, files, environment,
see also) are written here. Text is escaped for roff: a backslash, a leading dot or
apostrophe, and a hyphen where a minus is meant are never read as requests; other
than ASCII is written as \\[uXXXX], so no input encoding is assumed.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from importlib import metadata

import click

from fjord.cli import cli

SECTION = "8"

DESCRIPTION = (
    "fjord turns a Debian server into a light container host and keeps it that way from one "
    "declarative YAML file: Open vSwitch networking (br-ex holding the uplink and the public "
    "addresses, br-int a private IPv4 network NATed to the world, port forwards, public IPv6 "
    "for containers), the host system (forwarding, firewall, APT, libvirt, cgroups, boot "
    "persistence) and Debian containers run by libvirt's LXC driver. "
    "`fjord plan` shows what `fjord apply` would change; apply changes it, with the "
    "switchover of the uplink guarded so that a lost connection is rolled back.")

EXIT_STATUS = [
    ("0", "success; for plan, no changes pending (with --detailed-exitcode); for status "
          "and check, everything as declared."),
    ("1", "an error, or (status, check) drift or a failed check."),
    ("2", "the configuration file is invalid (every problem is listed with its key path); "
          "nothing was changed."),
    ("3", "something could not be read (for example without root): the host is not known "
          "to be as declared."),
    ("4", "plan --detailed-exitcode: changes are pending."),
]

FILES = [
    ("/etc/fjord/fjord.yaml", "the configuration (-c or $FJORD_CONFIG choose another)."),
    ("/var/lib/fjord", "fjord's state: address allocations, container records and roots."),
    ("/var/cache/fjord/images", "Debian root filesystem images built by mmdebstrap."),
    ("/etc/network/interfaces", "the persisted network (the previous one is kept beside it)."),
]

ENVIRONMENT = [
    ("FJORD_CONFIG", "the configuration file when -c is not given."),
    ("NO_COLOR", "no colours in the output."),
]


def escape(text: str) -> str:
    """``text`` as roff reads it literally (one paragraph or one line)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    lines = []
    for line in text.splitlines() or [""]:
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _paragraphs(text: str) -> Iterator[str]:
    """click help text as paragraphs (blank lines apart; \\b marks a verbatim block)."""
    for block in inspect.cleandoc(click.unstyle(text or "")).split("\n\n"):
        if block.startswith("\b\n"):
            yield ".nf\n" + escape(block[2:]) + "\n.fi"
        elif block.strip():
            yield escape(" ".join(block.split()))


def _options(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        yield ".TP"
        yield "\\fB" + escape(names) + "\\fR"
        yield escape(help_text or "")


def _walk(command: click.Command, ctx: click.Context,
          path: list[str]) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx),
                             [*path, name])


def render() -> str:
    root = click.Context(cli, info_name="fjord")
    try:
        version = metadata.version("fjord")
    except metadata.PackageNotFoundError:
        version = "unknown"
    out = [
        f'.TH FJORD {SECTION} "" "fjord {escape(version)}" "System Administration"',
        ".SH NAME",
        "fjord \\- a Debian server as a light container host, from one YAML file",
        ".SH SYNOPSIS",
        ".B fjord",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        escape(DESCRIPTION),
        ".SH OPTIONS",
        *_options(cli, root),
        ".SH COMMANDS",
    ]
    for path, command, ctx in _walk(cli, root, []):
        if not path:
            continue
        out.append(".SS " + escape("fjord " + " ".join(path)))
        pieces = command.collect_usage_pieces(ctx)
        out.append(".B " + escape("fjord " + " ".join(path)))
        out.append(escape(" ".join(pieces)))
        out.append(".PP")
        for paragraph in _paragraphs(command.help or command.short_help or ""):
            out.extend([paragraph, ".PP"])
        out.extend(_options(command, ctx))
    out.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        out.extend([".TP", f"\\fB{code}\\fR", escape(meaning)])
    out.append(".SH FILES")
    for name, meaning in FILES:
        out.extend([".TP", f"\\fI{escape(name)}\\fR", escape(meaning)])
    out.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        out.extend([".TP", f"\\fB{escape(name)}\\fR", escape(meaning)])
    out.extend([".SH SEE ALSO", "The documentation beside the source: README.md and docs/ "
                "(configuration, operations, security, containers, firewall, host, lab)."
                " \\fBovs\\-vsctl\\fR(8), \\fBvirsh\\fR(1), \\fBnft\\fR(8), "
                "\\fBinterfaces\\fR(5)."])
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
