"""`fjord container list|start|stop|restart|destroy|exec|console`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from fjord.cli import config_option, config_path, json_option, require_root


def _desired(path: str | None) -> Any:
    from fjord.state.known import load

    return load(config_path(path))


def _file_if_any(path: str | None) -> Any:
    """The file when one is named (-c, $FJORD_CONFIG) or the default one exists; None
    otherwise (commands that act on what exists need no file)."""
    from fjord.cli import DEFAULT_CONFIG
    from fjord.environment import current

    if path or current().config or os.path.exists(DEFAULT_CONFIG):
        return _desired(path)
    return None


def _declared(desired: Any, names: tuple[str, ...]) -> list[Any]:
    """The file's containers named (all of them must be declared)."""
    from fjord.errors import FjordError

    declared = {c.name: c for c in desired.containers}
    missing = [n for n in names if n not in declared]
    if missing:
        raise FjordError(f"no container named {', '.join(missing)} in {desired.filename}",
                         hint="see `fjord container list`")
    return [declared[n] for n in names]


def _exists(lv: Any, name: str, desired: Any) -> bool:
    """Whether fjord knows ``name``: a libvirt domain, a container root, or declared."""
    from fjord.containers import rootfs

    if desired is not None and any(c.name == name for c in desired.containers):
        return True
    if "/" in name or name in ("", ".", ".."):
        return False
    return (rootfs.read_record(rootfs.RootfsLayout.of(name)) is not None
            or lv.domain(name) is not None)


def _known(lv: Any, names: tuple[str, ...], desired: Any) -> None:
    from fjord.errors import FjordError

    unknown = [n for n in names if not _exists(lv, n, desired)]
    if unknown:
        what = "container" if len(unknown) == 1 else "containers"
        raise FjordError(f"unknown {what}: {', '.join(unknown)} (no such libvirt domain, "
                         "root or declaration)", hint="see `fjord container list`")


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _libvirt() -> Any:
    from fjord.containers.libvirt import Libvirt

    return Libvirt()


def _complete_names(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[str]:
    """Shell completion of container names: the roots fjord made."""
    from fjord.cli import install_environment
    from fjord.containers import rootfs
    from fjord.errors import FjordError

    try:
        install_environment()  # completion runs no group callback: this is its edge
        return [r.name for r in rootfs.all_records() if r.name.startswith(incomplete)]
    except (OSError, FjordError):
        return []


names_argument = click.argument("names", nargs=-1, required=True, metavar="NAME...",
                                shell_complete=_complete_names)
name_argument = click.argument("name", shell_complete=_complete_names)


@click.group(name="container")
def container() -> None:
    """Containers one by one: list, start, stop, restart, destroy, exec, console.

    `fjord apply` creates and starts what the file declares; these act on containers
    now (start, stop, restart and destroy take several names). Every one takes -c FILE;
    start and restart need the file (what to start), the others act on what exists.
    Destroying deletes the containers' data and needs --yes.
    """


@container.command(name="list")
@config_option
@json_option
def list_(config_path: str | None, as_json: bool) -> None:
    """The containers that exist (libvirt domains, container roots) and those the file
    declares; with a file, whether it declares each. Needs no file.

    Exit 3 when libvirt cannot be read (without root: needs root)."""
    from rich.markup import escape
    from rich.table import Table

    from fjord.cli import EXIT_UNREADABLE, unreadable_verdict
    from fjord.containers import rootfs
    from fjord.engine.plan import StateUnreadable
    from fjord.ui import console, print_json

    desired = _file_if_any(config_path)
    lv = _libvirt()
    unread: list[str] = []
    try:
        rows: list[dict[str, Any]] = []
        declared = {c.name: c for c in desired.containers} if desired is not None else {}
        try:
            domains = set(lv.names())
        except StateUnreadable as exc:
            unread.append(exc.message)
            domains = set()
        names = sorted(declared.keys() | {r.name for r in rootfs.all_records()} | domains)
        for name in names:
            record = rootfs.read_record(rootfs.RootfsLayout.of(name))
            c = declared.get(name)
            kept = dict(record.addresses or {}) if record else {}
            row: dict[str, Any] = {
                "name": name,
                "in_file": (c is not None) if desired is not None else None,
                "ipv4": str(c.ipv4) if c else kept.get("ipv4"),
                "ipv6": (str(c.ipv6) if c.ipv6 else None) if c else kept.get("ipv6"),
                "rootfs": record.mode if record else None,
                "image": record.image if record else None,
            }
            if unread:
                row.update(state="unknown", autostart=None, memory_used=None)
            else:
                state = lv.domain(name)
                row.update(state="running" if state and state.running else
                           "stopped" if state else "not defined",
                           autostart=state.autostart if state else None,
                           memory_used=lv.memory_usage(name)
                           if state and state.running else None)
            rows.append(row)
    finally:
        lv.close()
    if as_json:
        out: dict[str, Any] = {"containers": rows}
        if unread:
            out["unreadable"] = unread
        print_json(out)
    else:
        table = Table(box=None, header_style="bold")
        for col in ("name", "state", "ipv4", "ipv6", "rootfs", "autostart", "memory"):
            table.add_column(col)
        for r in rows:
            mem = f"{r['memory_used'] >> 20} MiB" if r["memory_used"] else ""
            name = r["name"] + ("" if r["in_file"] in (True, None) else " (not in the file)")
            autostart = "" if r["autostart"] is None else "yes" if r["autostart"] else "no"
            table.add_row(escape(name), r["state"], r["ipv4"] or "", r["ipv6"] or "",
                          r["rootfs"] or "", autostart, mem)
        console().print(table)
    if unread:
        from fjord.ui import console as make_console

        make_console(stderr=True).print(f"[yellow]fjord: cannot read libvirt: "
                                        f"{escape(unread[0])}[/]")
        unreadable_verdict("container list", 1, False)
        sys.exit(EXIT_UNREADABLE)


timeout_option = click.option(
    "--timeout", type=float, default=20.0, show_default=True,
    help="Seconds to wait for a clean shutdown before forcing it.")


@container.command()
@config_option
@names_argument
def start(config_path: str | None, names: tuple[str, ...]) -> None:
    """Start containers the file declares (root mounted, stale Open vSwitch ports cleaned
    first)."""
    from fjord.containers import lifecycle

    require_root("fjord container start")
    desired = _desired(config_path)
    containers = _declared(desired, _unique(names))
    lv = _libvirt()
    try:
        for c in containers:
            state = lv.domain(c.name)
            if state is not None and state.running:
                click.echo(f"{c.name} is already running.")
                continue
            lifecycle.start(lv, desired, c)
            click.echo(f"{c.name} started.")
    finally:
        lv.close()


@container.command()
@config_option
@timeout_option
@click.option("--force", is_flag=True, help="Stop at once (SIGKILL), no clean shutdown.")
@names_argument
def stop(config_path: str | None, timeout: float, force: bool,
         names: tuple[str, ...]) -> None:
    """Stop containers: a clean shutdown, forced after --timeout. Needs no file."""
    from fjord.containers import lifecycle

    require_root("fjord container stop")
    desired = _file_if_any(config_path)
    lv = _libvirt()
    try:
        _known(lv, _unique(names), desired)
        for name in _unique(names):
            (lifecycle.kill(lv, name) if force else lifecycle.stop(lv, name, timeout))
            click.echo(f"{name} stopped.")
    finally:
        lv.close()


@container.command()
@config_option
@timeout_option
@names_argument
def restart(config_path: str | None, timeout: float, names: tuple[str, ...]) -> None:
    """Stop containers the file declares cleanly and start them again."""
    from fjord.containers import lifecycle

    require_root("fjord container restart")
    desired = _desired(config_path)
    containers = _declared(desired, _unique(names))
    lv = _libvirt()
    try:
        for c in containers:
            lifecycle.stop(lv, c.name, timeout)
            lifecycle.start(lv, desired, c)
            click.echo(f"{c.name} restarted.")
    finally:
        lv.close()


@container.command()
@config_option
@click.option("--yes", is_flag=True, help="Really destroy: the containers' data is deleted.")
@names_argument
def destroy(config_path: str | None, yes: bool, names: tuple[str, ...]) -> None:
    """Stop containers, undefine them, delete their root filesystems, free their addresses.

    The data cannot be recovered. Without --yes, asks on a terminal and refuses
    otherwise. A container still in the file comes back, empty, at the next apply.
    Needs no file.
    """
    from fjord.containers import lifecycle
    from fjord.errors import FjordError

    require_root("fjord container destroy")
    names = _unique(names)
    listed = ", ".join(names)
    desired = _file_if_any(config_path)
    lv = _libvirt()
    try:
        _known(lv, names, desired)
        if not yes:
            if not sys.stdin.isatty():
                raise FjordError(f"destroying {listed} deletes "
                                 f"{'its' if len(names) == 1 else 'their'} data: add --yes "
                                 "to confirm")
            click.confirm(f"Destroy {listed} and delete "
                          f"{'its' if len(names) == 1 else 'their'} data?",
                          abort=True, err=True)
        for name in names:
            lifecycle.destroy(lv, name)
            click.echo(f"{name} destroyed.")
    finally:
        lv.close()


@container.command(name="exec", context_settings={"ignore_unknown_options": True,
                                                 "allow_interspersed_args": False})
@config_option
@name_argument
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(config_path: str | None, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a running container: `fjord container exec web -- ps aux`.

    COMMAND runs as the container's root with no more capabilities than the
    container's init, in all its namespaces and cgroups. fjord relays its input and
    output: a new pseudo-terminal when standard input and output are terminals, pipes
    otherwise; the exit status is COMMAND's. Options (-c) go before NAME. Needs no file.
    """
    from fjord.containers import relay
    from fjord.containers.lifecycle import container_env, init_pid
    from fjord.errors import FjordError

    require_root("fjord container exec")
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("no command given: put it after NAME --")
    pid = init_pid(name)
    if pid is None:
        _unknown_or_stopped(name, config_path)
        raise FjordError(f"container {name} is not running",
                         hint=f"start it: fjord container start {name}")
    sys.stdout.flush()
    sys.stderr.flush()
    code = relay.run(pid, list(command), container_env(tty=relay.wants_tty()))
    raise SystemExit(code)


def _unknown_or_stopped(name: str, path: str | None) -> None:
    """Raise "unknown" for a name fjord does not know."""
    lv = _libvirt()
    try:
        _known(lv, (name,), _file_if_any(path))
    finally:
        lv.close()


@container.command()
@config_option
@name_argument
def console(config_path: str | None, name: str) -> None:
    """Attach to a container's console (leave with Ctrl-]): libvirt's own console.
    Needs no file."""
    require_root("fjord container console")
    from fjord.environment import current

    _unknown_or_stopped(name, config_path)
    uri = current().libvirt_uri
    os.execvp("virsh", ["virsh", "-c", uri, "console", name])
