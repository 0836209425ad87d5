"""libvirt's configuration: clients default to the LXC driver, and the daemon listens
only on its local UNIX sockets.

    /etc/libvirt/libvirt.conf   uri_default = "lxc:///" (virsh and fjord talk to LXC)
    /etc/libvirt/libvirtd.conf  no TCP or TLS listener, bounded clients and workers
    /etc/default/libvirtd       the package's own file: fjord only removes --listen

On Debian 12 libvirtd is socket-activated: the TCP and TLS listeners are the systemd
units libvirtd-tcp.socket and libvirtd-tls.socket (see system.py, which keeps them
disabled); libvirtd.conf's listen_* settings cover a daemon started with --listen.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.host.files import File

ROOT = Path("/")
CLIENT_CONF = "etc/libvirt/libvirt.conf"
DAEMON_CONF = "etc/libvirt/libvirtd.conf"
DAEMON_DEFAULTS = "etc/default/libvirtd"

HEADER = ("# Managed by fjord (`fjord apply`): edit the fjord configuration, not this file.\n"
          "# The previous version is kept under /var/lib/fjord/backups.\n")

# A container host has one operator and a few tools talking to libvirtd: libvirt's
# defaults (5000 clients) only widen what a stuck or hostile local client can hold.
MAX_CLIENTS = 64
MAX_ANONYMOUS_CLIENTS = 16
MAX_QUEUED_CLIENTS = 32
MIN_WORKERS = 2
MAX_WORKERS = 20


def render_client_conf() -> str:
    return HEADER + (
        "\n# `virsh` and fjord manage the LXC containers unless told otherwise.\n"
        'uri_default = "lxc:///"\n'
    )


def render_daemon_conf() -> str:
    return HEADER + (
        "\n# Only the local UNIX sockets: no TCP, no TLS listener.\n"
        "listen_tls = 0\n"
        "listen_tcp = 0\n"
        "\n# Bounded: one operator and fjord, not a cloud.\n"
        f"max_clients = {MAX_CLIENTS}\n"
        f"max_anonymous_clients = {MAX_ANONYMOUS_CLIENTS}\n"
        f"max_queued_clients = {MAX_QUEUED_CLIENTS}\n"
        f"min_workers = {MIN_WORKERS}\n"
        f"max_workers = {MAX_WORKERS}\n"
    )


_ARGS = re.compile(r"^(\s*LIBVIRTD_ARGS=)(.*?)\s*$")
LISTEN_FLAGS = frozenset({"--listen", "-l"})
EDIT_NOTE = "# fjord removed --listen: libvirtd listens only on its UNIX sockets.\n"


def drop_listen(text: str) -> str:
    """/etc/default/libvirtd with --listen (-l) taken out of LIBVIRTD_ARGS, other
    arguments (--timeout 120) kept. Idempotent: a clean file comes back unchanged."""
    out = []
    for line in text.splitlines(keepends=True):
        m = _ARGS.match(line)
        if m is None:
            out.append(line)
            continue
        try:
            args = shlex.split(m.group(2), comments=True)
        except ValueError:
            out.append(line)  # not shell words we understand: leave it for the operator
            continue
        words = args[0].split() if len(args) == 1 else args
        kept = [w for w in words if w not in LISTEN_FLAGS]
        if kept == words:
            out.append(line)
            continue
        out += [EDIT_NOTE, f'{m.group(1)}"{" ".join(kept)}"\n']
    return "".join(out)


class EditedFile(Resource):
    """A file a package owns, of which fjord rewrites only what it must (through File:
    atomic, backed up, shown as a diff). Nothing to do when the file does not exist."""

    kind = "file"

    def __init__(self, path: Path, edit: Callable[[str], str], *, reason: str,
                 after: tuple[Reference, ...] = ()) -> None:
        super().__init__(str(path))
        self.path = path
        self.edit = edit
        self.reason = reason
        self.after = after

    def _file(self) -> File | None:
        try:
            text = self.path.read_text()
            mode = self.path.stat().st_mode & 0o7777
        except FileNotFoundError:
            return None
        return File(self.path, self.edit(text), mode=mode, reason=self.reason)

    @property
    def content(self) -> bytes | None:
        f = self._file()
        return None if f is None else f.content

    def changes(self, ctx: Context) -> list[Change]:
        f = self._file()
        return [] if f is None else f.changes(ctx)

    def unchanged_reason(self, ctx: Context) -> str:
        return f"{self.path}: nothing to change"


def files(root: Path = ROOT, after: tuple[Reference, ...] = ()) -> tuple[File, File, EditedFile]:
    """The client file, then the daemon's two (the ones a restart must follow)."""
    return (
        File(root / CLIENT_CONF, render_client_conf(), reason="virsh defaults to lxc:///",
             after=after),
        File(root / DAEMON_CONF, render_daemon_conf(), reason="no TCP/TLS listener",
             after=after),
        EditedFile(root / DAEMON_DEFAULTS, drop_listen, reason="no --listen", after=after),
    )
