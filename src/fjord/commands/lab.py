"""`fjord lab ...`: parse, call fjord.lab.Lab, print. Loaded lazily by fjord.cli."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from fjord.errors import FjordError
from fjord.lab.provider import DEFAULT_PROVIDER, PROVIDERS

# The repository's example, for `fjord lab up` straight from a checkout.
REPO_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "lab.yaml"

name_option = click.option("--name", default="lab", show_default=True, metavar="NAME",
                           help="The lab's name (several labs can run side by side).")
command_argument = click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def default_config() -> str:
    """-c's default: $FJORD_CONFIG, then examples/lab.yaml of the repository."""
    env = os.environ.get("FJORD_CONFIG")
    if env:
        return env
    if REPO_EXAMPLE.is_file():
        return str(REPO_EXAMPLE)
    raise FjordError("no configuration file for the lab",
                     hint="give -c FILE or set FJORD_CONFIG (the host section is used)")


def _lab(name: str) -> Any:
    from fjord.lab.lab import Lab

    return Lab(name)


def _progress(enabled: bool) -> Any:
    """A one-line rich spinner on stderr when it is a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        return None
    from rich.console import Console

    return Console(stderr=True).status("lab")


@click.group(name="lab")
def lab() -> None:
    """Simulate a whole server and its upstream in namespaces.

    \b
    The server (network, mount, UTS and cgroup namespaces) starts as a freshly
    installed rented server configured from the file's host section, with Open
    vSwitch and libvirt running inside; the upstream is the provider's router,
    a DNS server and a far host (far.example.org). fjord runs in it unchanged:
      fjord lab up
      fjord lab exec -- fjord apply -c /tmp/fjord.yaml --yes
      fjord lab reboot
      fjord lab down
    """


@lab.command()
@click.option("-c", "--config", "config_path", metavar="FILE",
              help="Configuration whose host section the lab simulates "
                   "(default: $FJORD_CONFIG, then the repository's examples/lab.yaml).")
@name_option
@click.option("--provider", type=click.Choice(PROVIDERS), default=DEFAULT_PROVIDER,
              show_default=True, help="How the provider treats the server's uplink.")
def up(config_path: str | None, name: str, provider: str) -> None:
    """Create the lab, or check that it is up (then nothing changes)."""
    path = config_path or default_config()
    started = time.monotonic()
    status = _progress(True)
    if status is not None:
        status.start()
    try:
        outcome = _lab(name).up(
            config=path, provider=provider,
            progress=(lambda step: status.update(f"lab {name}: {step}")) if status else
            (lambda _: None))
    finally:
        if status is not None:
            status.stop()
    click.echo(f"lab {name}: {outcome} in {time.monotonic() - started:.1f} s "
               f"(provider {provider}); run `fjord lab exec --name {name} -- CMD`")


@lab.command()
@name_option
def down(name: str) -> None:
    """Remove the lab and everything it created on the machine."""
    if _lab(name).down():
        click.echo(f"lab {name}: removed")
    else:
        click.echo(f"lab {name}: there was none")


@lab.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(name: str, as_json: bool) -> None:
    """Show the lab: namespaces, daemons, addresses, provider and the foreign-MAC count.

    Exit status 0 when the lab is up, 1 otherwise."""
    report = _lab(name).status()
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for line in render_status(report):
            click.echo(line)
    sys.exit(0 if report["state"] == "up" else 1)


def render_status(report: dict[str, Any]) -> list[str]:
    name = report["name"]
    if report["state"] == "absent":
        return [f"lab {name}: absent"]
    srv, ups = report["server"], report["upstream"]
    lines = [f"lab {name}: {report['state']}  ({report['dir']})"]
    lines += [f"  problem: {p}" for p in report["problems"]]
    lines.append(f"  provider  {report['provider']}: {report['provider_description']}")
    if "foreign_mac" in report:
        fm = report["foreign_mac"]
        verb = "dropped" if fm["action"] == "drop" else "seen"
        lines.append(f"  foreign-MAC frames {verb}: {fm['packets']} ({fm['bytes']} bytes)")
    lines.append(f"  server    {srv['fqdn']}  {srv['uplink']} {srv['mac']}  "
                 f"netns {report['netns']['server']}  holder {srv['holder']}")
    for a in srv.get("addresses", []):
        lines.append(f"            {a['ifname']:<10} {a['address']}/{a['prefixlen']}")
    for r in srv.get("routes", []):
        if r["dst"] == "default":
            lines.append(f"            default via {r['gateway']} dev {r['ifname']}")
    daemons = ", ".join(f"{d} {pid or 'stopped'}" for d, pid in srv["daemons"].items())
    lines.append(f"  daemons   {daemons}")
    lines.append(f"  upstream  gateways {ups['gateway4']} {ups['gateway6'] or ''}  "
                 f"netns {report['netns']['upstream']}")
    lines.append(f"  dns       {' '.join(ups['dns']) or '(none)'}  dnsmasq {ups['dnsmasq']}")
    far = ups["far"]
    lines.append(f"  far host  {far['name']} {far['ipv4']} {far['ipv6']}  "
                 f"netns {report['netns']['far']}")
    boot = report.get("last_boot")
    if boot:
        failed = [s["step"] for s in boot["steps"] if not s["ok"]]
        lines.append(f"  last boot {'ok' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return lines


@lab.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the boot report as JSON.")
def reboot(name: str, as_json: bool) -> None:
    """Power-cycle the server and replay its boot from its files.

    Exit status 1 when a boot step failed (the boot goes on, as a real one does)."""
    report = _lab(name).reboot()
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        for step in report.steps:
            mark = "ok  " if step.ok else "FAIL"
            click.echo(f"{mark} {step.name:<12} {step.seconds:6.2f} s  {step.detail}")
    sys.exit(0 if report.ok else 1)


@lab.command(name="exec", context_settings=PASS_THROUGH)
@name_option
@command_argument
def exec_(name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on the simulated server: `fjord lab exec -- CMD...`.

    Its network, mount, UTS and cgroup namespaces; same working directory (when the
    server sees it) and environment; stdin, stdout, stderr and exit status are CMD's."""
    _enter(name, "server", command)


@lab.command(context_settings=PASS_THROUGH)
@name_option
@click.option("--far", is_flag=True, help="On the far host instead of the router.")
@command_argument
def upstream(name: str, far: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND on the provider's router (or with --far on the far host)."""
    _enter(name, "far" if far else "upstream", command)


def _enter(name: str, part: str, command: tuple[str, ...]) -> None:
    """Become COMMAND in the lab; exit 125 (as `env` and container tools do) when it
    cannot be started there, so that scripts tell that from COMMAND's own failure."""
    from fjord.lab.enter import EXIT_NOT_RUNNING, enter
    from fjord.lab.preflight import check_root

    check_root()
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    try:
        enter(name, part, argv)
    except FjordError as exc:
        click.echo(f"fjord lab: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""),
                   err=True)
    except OSError as exc:
        click.echo(f"fjord lab: cannot enter lab {name}: {exc}", err=True)
    sys.exit(EXIT_NOT_RUNNING)
