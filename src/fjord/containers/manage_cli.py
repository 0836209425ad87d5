"""`fjord container list|start|stop|restart|destroy|exec|console`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from fjord.cli import config_option, config_path, json_option, require_root


def _desired(path: str | None) -> Any:
    from fjord.config.desired import load

    return load(config_path(path))


def _container(desired: Any, name: str) -> Any:
    from fjord.errors import FjordError

    try:
        return desired.container(name)
    except KeyError:
        raise FjordError(f"no container named {name} in {desired.filename}") from None


def _libvirt() -> Any:
    from fjord.containers.libvirt import Libvirt

    return Libvirt()


@click.group(name="container")
def container() -> None:
    """Containers one by one: list, start, stop, restart, destroy, exec, console.

    `fjord apply` creates and starts what the file declares; these act on one
    container now. Destroying deletes the container's data and needs --yes.
    """


@container.command(name="list")
@config_option
@json_option
def list_(config_path: str | None, as_json: bool) -> None:
    """The containers of the file and those fjord made that the file no longer names."""
    from rich.markup import escape
    from rich.table import Table

    from fjord.containers import rootfs
    from fjord.ui import console, print_json

    desired = _desired(config_path)
    lv = _libvirt()
    try:
        rows: list[dict[str, Any]] = []
        declared = {c.name: c for c in desired.containers}
        names = sorted(declared.keys() | {r.name for r in rootfs.all_records()})
        for name in names:
            state = lv.domain(name)
            record = rootfs.read_record(rootfs.Layout.of(name))
            c = declared.get(name)
            rows.append({
                "name": name,
                "state": "running" if state and state.running else
                         "stopped" if state else "not defined",
                "in_file": c is not None,
                "ipv4": str(c.ipv4) if c else None,
                "ipv6": str(c.ipv6) if c and c.ipv6 else None,
                "rootfs": record.mode if record else None,
                "image": record.image if record else None,
                "autostart": state.autostart if state else None,
                "memory_used": lv.memory_usage(name) if state and state.running else None,
            })
    finally:
        lv.close()
    if as_json:
        print_json({"containers": rows})
        return
    table = Table(box=None, header_style="bold")
    for col in ("name", "state", "ipv4", "ipv6", "rootfs", "autostart", "memory"):
        table.add_column(col)
    for r in rows:
        mem = f"{r['memory_used'] >> 20} MiB" if r["memory_used"] else ""
        name = r["name"] + ("" if r["in_file"] else " (not in the file)")
        table.add_row(escape(name), r["state"], r["ipv4"] or "", r["ipv6"] or "",
                      r["rootfs"] or "", "yes" if r["autostart"] else "no", mem)
    console().print(table)


@container.command()
@config_option
@click.argument("name")
def start(config_path: str | None, name: str) -> None:
    """Start a container (its root mounted, stale Open vSwitch ports cleaned first)."""
    from fjord.containers import lifecycle

    require_root("fjord container start")
    desired = _desired(config_path)
    c = _container(desired, name)
    lv = _libvirt()
    try:
        state = lv.domain(name)
        if state is not None and state.running:
            click.echo(f"{name} is already running.")
            return
        lifecycle.start(lv, desired, c)
    finally:
        lv.close()
    click.echo(f"{name} started.")


@container.command()
@click.option("--timeout", type=float, default=20.0, show_default=True,
              help="Seconds to wait for a clean shutdown before forcing it.")
@click.option("--force", is_flag=True, help="Stop at once (SIGKILL), no clean shutdown.")
@click.argument("name")
def stop(timeout: float, force: bool, name: str) -> None:
    """Stop a container: a clean shutdown, forced after --timeout."""
    from fjord.containers import lifecycle

    require_root("fjord container stop")
    lv = _libvirt()
    try:
        (lifecycle.kill(lv, name) if force else lifecycle.stop(lv, name, timeout))
    finally:
        lv.close()
    click.echo(f"{name} stopped.")


@container.command()
@config_option
@click.option("--timeout", type=float, default=20.0, show_default=True)
@click.argument("name")
def restart(config_path: str | None, timeout: float, name: str) -> None:
    """Stop a container cleanly and start it again."""
    from fjord.containers import lifecycle

    require_root("fjord container restart")
    desired = _desired(config_path)
    c = _container(desired, name)
    lv = _libvirt()
    try:
        lifecycle.stop(lv, name, timeout)
        lifecycle.start(lv, desired, c)
    finally:
        lv.close()
    click.echo(f"{name} restarted.")


@container.command()
@click.option("--yes", is_flag=True, help="Really destroy: the container's data is deleted.")
@click.argument("name")
def destroy(yes: bool, name: str) -> None:
    """Stop a container, undefine it, delete its root filesystem and free its addresses.

    The data cannot be recovered. Without --yes, asks on a terminal and refuses
    otherwise. A container still in the file comes back, empty, at the next apply.
    """
    from fjord.containers import lifecycle
    from fjord.errors import FjordError

    require_root("fjord container destroy")
    if not yes:
        if not sys.stdin.isatty():
            raise FjordError(f"destroying {name} deletes its data: add --yes to confirm")
        click.confirm(f"Destroy {name} and delete its data?", abort=True, err=True)
    lv = _libvirt()
    try:
        lifecycle.destroy(lv, name)
    finally:
        lv.close()
    click.echo(f"{name} destroyed.")


@container.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a running container: `fjord container exec web -- ps aux`.

    Standard input, output, the terminal and the exit status are COMMAND's own.
    """
    from fjord.containers.lifecycle import container_env, enter, exec_argv

    require_root("fjord container exec")
    argv = exec_argv(name, list(command))
    enter(name)  # under the container's limits, like everything in it
    sys.stdout.flush()
    os.execvpe(argv[0], argv, {**container_env()})


@container.command()
@click.argument("name")
def console(name: str) -> None:
    """Attach to a container's console (leave with Ctrl-]): libvirt's own console."""
    require_root("fjord container console")
    from fjord.containers.libvirt import DEFAULT_URI

    uri = os.environ.get("FJORD_LIBVIRT_URI", DEFAULT_URI)
    os.execvp("virsh", ["virsh", "-c", uri, "console", name])
