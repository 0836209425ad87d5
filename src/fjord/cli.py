"""fjord's command line: parse, call, print. Heavy modules load inside the commands so
that `fjord --help` answers at once."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import click

DEFAULT_CONFIG = "/etc/fjord/fjord.yaml"

# Sub-groups living in their own modules, imported only when used.
LAZY_GROUPS = {
    "container": ("fjord.commands.container", "container",
                  "Containers one by one: list, start, stop, restart, destroy, exec, console."),
    "image": ("fjord.commands.image", "image",
              "Debian root filesystem images: build, list, prune."),
    "lab": ("fjord.commands.lab", "lab",
            "Simulate a whole server in namespaces (tests, demo, dry runs)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_GROUPS:
            import importlib

            module, attr, _ = LAZY_GROUPS[name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        """With --host (or $FJORD_HOST), a command that acts on a server runs there
        (fjord.remote); schema and lab stay on this machine."""
        host = ctx.params.get("host")
        # what follows the global options: click keeps the command's name apart
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not host or not args:
            return super().invoke(ctx)
        from fjord import remote

        if args[0] not in remote.COMMANDS:
            if ctx.get_parameter_source("host") is click.core.ParameterSource.ENVIRONMENT:
                return super().invoke(ctx)
            raise click.UsageError(f"fjord {args[0]} runs on this machine; --host is for "
                                   + ", ".join(sorted(remote.COMMANDS)))
        with ctx:
            click.Command.invoke(self, ctx)  # the group's own set-up (logging, ctx.obj)
            forwarded = ["-v"] * ctx.params.get("verbose", 0)
            if ctx.params.get("debug"):
                forwarded.append("--debug")
            code = remote.main(self, ctx, host, args, forwarded)
        sys.exit(code)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_GROUPS:
                rows.append((name, LAZY_GROUPS[name][2]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=70)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


config_option = click.option(
    "-c", "--config", "config_path", metavar="FILE",
    help=f"Configuration file (default: $FJORD_CONFIG, then {DEFAULT_CONFIG}).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _more_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    if value:
        root = ctx.find_root()
        root.obj["verbose"] = root.obj.get("verbose", 0) + value
        logging.getLogger("fjord.run").setLevel(logging.DEBUG)
    return value


verbose_option = click.option(
    "-v", "--verbose", "_verbose", count=True, expose_value=False, callback=_more_verbose,
    help="Show more: diffs, unchanged resources, every external command.",
)


# The exit codes (docs/operations.md, "Exit codes"; each command's --help).
EXIT_OK = 0
EXIT_FAILED = 1      # plan, apply: an error; status: drift; check: a check failed
EXIT_INVALID = 2     # the command line or the configuration file is invalid: nothing read
EXIT_UNREADABLE = 3  # what fjord must read could not be read (not root, a daemon down...)
EXIT_CHANGES = 4     # plan --detailed-exitcode: changes are pending


def system_environment(environ: Mapping[str, str]) -> Any:
    """The command-line edge: the Environment (fjord.environment) the process's
    variables describe, built once; everything below is handed it. On a simulated
    server (FJORD_SERVICE_MANAGER=lab) the lab's builder adds the lab's managers."""
    from fjord.environment import SERVICE_MANAGER, Environment

    if environ.get(SERVICE_MANAGER) == "lab":
        from fjord.lab.environment import lab_environment

        return lab_environment(environ)
    return Environment.from_system(environ)


def install_environment() -> None:
    from fjord import environment

    environment.use(system_environment(os.environ))


def config_path(value: str | None) -> str:
    from fjord.environment import current

    return value or current().config or DEFAULT_CONFIG


# A file with thousands of problems is not read line by line: the first ones, then a count.
SHOWN_PROBLEMS = 200


def fail(error: Any) -> None:
    """Print a FjordError (no traceback unless --debug) and exit with its status."""
    from rich.markup import escape

    from fjord.config.problems import ConfigError
    from fjord.ui import console

    err = console(stderr=True)
    if isinstance(error, ConfigError):
        shown = error.problems[:SHOWN_PROBLEMS]
        for problem in shown:
            err.print(escape(problem.render(error.filename)), highlight=False)
        more = len(error.problems) - len(shown)
        if more:
            err.print(f"… and {more} more (the first {len(shown)} are shown)",
                      highlight=False)
        err.print(f"[red]{len(error.problems)} problem(s); nothing was changed.[/]")
    else:
        err.print(f"[red]fjord: error:[/] {escape(error.message)}")
        if error.hint:
            err.print(f"[dim]hint: {escape(error.hint)}[/]")
    sys.exit(error.exit_code)


def unreadable_verdict(command: str, unreadable: int, differs: bool) -> bool:
    """Whether ``command`` must exit EXIT_UNREADABLE because ``unreadable`` resources
    could not be read, and if so say why on stderr. Without root it always must (the
    cause, "needs root", is said). As root, an unreadable resource beside pending changes
    is usually one those changes bring up (a daemon apply installs or starts; apply reads
    every resource again before it changes it): the verdict is the changes'. With
    nothing else to do it is a host fjord cannot tell is as declared."""
    if not unreadable:
        return False
    from fjord.ui import console

    err = console(stderr=True)
    what = f"{unreadable} resource{'s' if unreadable != 1 else ''} could not be read"
    if os.geteuid() != 0:
        err.print(f"[yellow]fjord: {what}: `fjord {command}` needs root to read the whole "
                  "host (run it with sudo); the host is not known to be as declared[/]")
        return True
    if differs:
        return False
    err.print(f"[yellow]fjord: {what} (the `! cannot read` lines): the host is not known "
              "to be as declared[/]")
    return True


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        from fjord.errors import NotRootError

        raise NotRootError(what)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show every external command (-vv: debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-H", "--host", envvar="FJORD_HOST", metavar="[USER@]SERVER[:PORT]",
              help="Run the command on this server over SSH (your ssh, ~/.ssh/config and "
                   "agent; $FJORD_SSH replaces the ssh command): validate, plan, apply, "
                   "check, status, confirm, container, image. -c FILE is read here and "
                   "copied over; apply confirms a switchover over a new SSH connection. "
                   "Default: $FJORD_HOST, else this machine.")
@click.version_option(package_name="fjord")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool, host: str | None) -> None:
    """fjord: a rented Debian server as a light container host, from one YAML file.

    \b
    The file declares the host network (Open vSwitch br-ex with the uplink and the
    public addresses, br-int a private IPv4 network NATed to the world, port
    forwards), the host system and the Debian containers (libvirt LXC).

    \b
    Typical use:
      fjord validate -c fjord.yaml     check the file, touch nothing
      fjord plan -c fjord.yaml         show what apply would change
      fjord apply -c fjord.yaml        converge the host (asks first)
      fjord check -c fjord.yaml        prove connectivity (ssh, ping, ping6)
      fjord lab up                     try it all on a simulated server

    \b
    From your laptop (the server's fjord, over your SSH; same fjord version on both):
      fjord --host root@203.0.113.7 plan -c fjord.yaml
      fjord --host root@203.0.113.7 apply -c fjord.yaml   confirms the switchover
                                                           over a new SSH connection
    """
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if verbose < 2:
        logging.getLogger("fjord.run").setLevel(logging.DEBUG if verbose else logging.WARNING)
        for noisy in ("ovsdbapp", "ovs", "pyroute2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # ovsdbapp logs a failed transaction with its traceback before raising it; fjord
        # reports the exception itself (resource, cause, hint): the traceback is noise.
        logging.getLogger("ovsdbapp").setLevel(logging.CRITICAL)
    ctx.obj = {"verbose": verbose, "debug": debug}
    install_environment()


def _load(path: str | None) -> Any:
    """The file's desired state on this host (its allocations, its containers' suites)."""
    from fjord.state.known import load

    return load(config_path(path))


def _config_file(path: str | None) -> str:
    return config_path(path)


@cli.command()
@config_option
@json_option
def validate(config_path: str | None, as_json: bool) -> None:
    """Check a configuration file; touch nothing.

    Exit 0 when valid; exit 2 with one line per problem, each naming its key path
    (e.g. `containers.web.ipv4: 10.9.0.2 is outside the private network 10.1.0.0/16`).
    A file that names no host.apt.suite, checked on a machine whose release fjord does
    not know, is valid (it may be for another server): a note says plan and apply here
    would stop.
    """
    desired = _load(config_path)
    # The file may be for another server (validated on a laptop): a release this machine
    # does not have is no problem of the file's, but plan and apply here would stop.
    unknown = desired.suite_unknown()
    if as_json:
        from fjord.ui import print_json

        print_json({"valid": True, "containers": [c.name for c in desired.containers],
                    "apt_suite": desired.host.apt.suite})
    else:
        n = len(desired.containers)
        click.echo(f"{desired.filename}: valid ({n} container{'s' if n != 1 else ''})")
    if unknown is not None:
        click.echo(f"note: {unknown.render()}; valid as a file for another server, but "
                   "plan and apply on this machine stop there", err=True)


@cli.command()
def schema() -> None:
    """Print the configuration's JSON Schema (for editors and linters)."""
    import json

    from fjord.config.models import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


only_option = click.option(
    "--only", "only", multiple=True, type=click.Choice(["host", "network", "containers"]),
    help="Limit to these layers (repeatable): host system, network, containers.",
)


prune_option = click.option(
    "--prune", is_flag=True,
    help="Destroy containers fjord made that the file no longer names (their data is "
         "deleted). Without it they are reported and kept. plan --prune shows what "
         "apply --prune would do.")


def _plan(desired: Any, options: Any) -> tuple[Any, Any, Any]:
    from fjord.engine.plan import make_plan
    from fjord.engine.resource import Context
    from fjord.resources import all_resources

    ctx = Context(desired, options=options)
    resources = all_resources(desired, options.only, prune=options.prune)
    return ctx, resources, make_plan(resources, ctx)


@cli.command()
@config_option
@json_option
@verbose_option
@only_option
@prune_option
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 4 when changes are pending, 0 only when there are none.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also save the plan to FILE (needs root), for `fjord apply FILE`: it "
                   "runs these changes only, and refuses when the file, fjord or the "
                   "host changed since.")
@click.pass_context
def plan(click_ctx: click.Context, config_path: str | None, as_json: bool,
         only: tuple[str, ...], prune: bool, detailed_exitcode: bool,
         out_file: str | None) -> None:
    """Show, in order, the changes `apply` would make.

    Reads the host's actual state (Open vSwitch, netlink, libvirt, files) and compares it
    with the file. What cannot be read is reported (`! cannot read …`) and planned as
    absent. With -v, also shows file diffs and why unchanged resources need nothing.

    \b
    Exit codes (as terraform's plan -detailed-exitcode, but 2 stays "invalid file"):
      0  nothing to change, or changes pending (without --detailed-exitcode)
      1  error
      2  the command line or the configuration file is invalid (nothing read)
      3  some of the host's state could not be read: not root (needs root), or as
         root with no pending change that would explain it (a daemon down, say)
      4  changes are pending (only with --detailed-exitcode)
    """
    from fjord.ui import console, print_json

    digest = None
    if out_file is not None:
        from fjord.engine.saved import config_digest

        require_root("fjord plan --out")  # a plan made without root reads little
        digest = config_digest(_config_file(config_path))
    desired = _load(config_path)
    from fjord.engine.resource import Options

    verbose = click_ctx.obj["verbose"] > 0 and not as_json
    ctx, _, p = _plan(desired, Options(frozenset(only) if only else None, prune,
                                       commands=verbose))
    if out_file is not None and digest is not None:
        from fjord.engine.apply import Shown
        from fjord.engine.saved import saved_of

        saved_of(Shown.of(p), _config_file(config_path), digest, only, prune).save(out_file)
    try:
        if as_json:
            print_json(p.as_json())
        else:
            show_plan(p, console(), verbose=verbose)
    finally:
        ctx.close()
    if unreadable_verdict("plan", len(p.unreadable), not p.empty):
        sys.exit(EXIT_UNREADABLE)
    if detailed_exitcode and not p.empty:
        sys.exit(EXIT_CHANGES)


def show_plan(p: Any, out: Any, *, verbose: bool = False) -> None:
    """The plan for people; a plan with unreadable resources and no changes is not
    called "as declared"."""
    from rich.markup import escape

    from fjord.ui import render_plan

    if not (p.empty and p.unreadable):
        render_plan(p, out, verbose=verbose)
        return
    for u in p.unreadable:
        out.print(f"[yellow]  ! cannot read {escape(u.resource)}: {escape(u.reason)}[/]")
    show_warnings(p.warnings, out)
    if verbose:
        for same in p.unchanged:
            out.print(f"[dim]    = {escape(same.resource)}: {escape(same.reason)}[/]")
    out.print(f"[yellow]No changes in what could be read; {len(p.unreadable)} resource(s) "
              "could not be read.[/]")


def show_warnings(warnings: Any, out: Any, shown: set[str] | None = None) -> None:
    """Each warning once (``shown`` remembers those already printed)."""
    from rich.markup import escape

    for w in warnings:
        if shown is not None:
            if w in shown:
                continue
            shown.add(w)
        out.print(f"[yellow]  ! {escape(w)}[/]")


@cli.command()
@config_option
@json_option
@verbose_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", type=float, default=0.0, metavar="SECONDS",
              help="Wait this long for another running apply to finish (default: refuse).")
@click.option("--confirm-timeout", type=click.FloatRange(min=5), metavar="SECONDS",
              help="After moving the uplink, wait this long for `fjord confirm` (run it over "
                   "a new SSH connection) before rolling back. Default: the automatic "
                   "gateway check is the confirmation. `fjord --host SERVER apply` always "
                   "waits (60 s unless given) and confirms over a new connection itself.")
@click.option("--announce-confirm", is_flag=True, hidden=True,
              help="With --confirm-timeout: say on stderr, on a line of its own, when the "
                   "confirmation is awaited (what `fjord --host` watches for).")
@only_option
@prune_option
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False),
                metavar="[PLAN]")
@click.pass_context
def apply(click_ctx: click.Context, config_path: str | None, as_json: bool, yes: bool,
          wait: float, confirm_timeout: float | None, announce_confirm: bool,
          only: tuple[str, ...], prune: bool, plan_file: str | None) -> None:
    """Converge the host to the file.

    With PLAN (saved by `fjord plan --out PLAN`), runs that plan without asking: refused
    when the configuration file or fjord changed since, or when the host, read again,
    needs a change the plan did not have or has a different one.

    Shows the plan and asks for confirmation (unless --yes), then executes the changes in
    dependency order, re-reading each resource just before changing it. After the
    confirmation it runs only what was shown: when the host changed in between (a
    change differs or appears), it refuses and says what differs (exit 1). Stops at the
    first failure, naming the resource, the command and its stderr; running apply again
    continues from where the host is. A resource that cannot be read (a container's
    root holding a FIFO where a file should be, say) is left as it is with what comes
    after it; the rest is applied, and apply then exits 1 naming it. A converged host
    gets no change. Every warning `plan` shows is shown here too.

    \b
    Exit codes:
      0  the host is as declared (changes applied, or none needed)
      1  error: a change failed (apply again continues), something could not be read
         (the rest was applied), or apply was refused (the host changed since the
         plan was shown, too)
      2  the command line or the configuration file is invalid (nothing read)
      3  nothing to change in what could be read, but something could not be read
    """
    from fjord.engine.apply import ApplyError, Journal, NotConverged, Shown, apply_lock
    from fjord.engine.apply import apply as run_apply
    from fjord.ui import ProgressReporter, console, print_json, render_plan

    saved = None
    if plan_file is not None:
        from fjord.engine.saved import Saved

        saved = Saved.load(plan_file)
        saved.check(_config_file(config_path), only, prune)
        only, prune, yes = saved.only, saved.prune, True
    desired = _load(config_path)
    require_root("fjord apply")
    out = console(stderr=as_json)
    shown: set[str] = set()
    with apply_lock(wait):
        def prompt(seconds: float) -> None:
            out.print(f"[bold]The uplink moved and the gateways answer. Run `fjord confirm` "
                      f"from a new SSH connection within {seconds:.0f} s, or everything is "
                      f"rolled back.[/]")
            if announce_confirm:
                from fjord.remote import CONFIRM_MARKER

                sys.stdout.flush()
                sys.stderr.write(f"{CONFIRM_MARKER} {seconds:.0f}\n")
                sys.stderr.flush()

        from fjord.engine.resource import Options

        ctx, resources, p = _plan(desired, Options(
            frozenset(only) if only else None, prune, confirm_timeout=confirm_timeout,
            confirm_prompt=prompt))
        try:
            if p.empty:
                if as_json:
                    print_json(p.as_json())
                if not as_json or p.unreadable:
                    show_plan(p, out, verbose=click_ctx.obj["verbose"] > 0)
                if unreadable_verdict("apply", len(p.unreadable), False):
                    sys.exit(EXIT_UNREADABLE)
                return
            # with --yes: the run's own reads are the plan; with a saved one: that
            confirmed = saved.shown if saved is not None else None
            if not yes:
                if not sys.stdin.isatty():
                    from fjord.errors import FjordError

                    raise FjordError("apply needs confirmation and there is no terminal",
                                     hint="review `fjord plan`, then run `fjord apply --yes`")
                render_plan(p, out, verbose=click_ctx.obj["verbose"] > 0)
                shown.update(p.warnings)
                click.confirm("Apply these changes?", abort=True, err=True)
                confirmed = Shown.of(p)
            else:
                from rich.markup import escape

                for u in p.unreadable:
                    out.print(f"[yellow]  ! cannot read {escape(u.resource)} for now: "
                              f"{escape(u.reason)}[/]")
                show_warnings(p.warnings, out, shown)
            journal = Journal()
            try:
                reporter = ProgressReporter(out)
                ctx.progress = reporter.progress
                done = run_apply(resources, ctx, reporter, journal, shown=confirmed)
            except (ApplyError, NotConverged) as exc:
                if as_json:  # what ran, and how it ended; the error itself on stderr
                    print_json(apply_json(p, journal, ctx.warnings, exc.message))
                raise
            finally:
                # what the resources said while apply read them again
                show_warnings(ctx.warnings, out, shown)
        finally:
            ctx.close()
    if as_json:
        print_json(apply_json(p, journal, ctx.warnings))
    else:
        out.print(f"Applied {len(done)} change{'s' if len(done) != 1 else ''}.")


def apply_json(p: Any, journal: Any, warnings: list[str],
               error: str | None = None) -> dict[str, Any]:
    """``apply --json``: every change with its outcome and duration (docs/operations.md,
    "apply --json")."""
    changes = journal.outcomes(p.by_resource)
    result: dict[str, Any] = {
        "changes": changes,
        "applied": sum(1 for c in changes if c["outcome"] == "done"),
        "failed": error is not None,
    }
    if error is not None:
        result["error"] = error
    if warnings:
        result["warnings"] = list(warnings)
    return result


@cli.command()
@config_option
@json_option
def check(config_path: str | None, as_json: bool) -> None:
    """Prove connectivity: gateways, forwarding, firewall, declared state, containers.

    For every container: it runs, answers ping, takes the configured SSH key, reaches
    the outside over IPv4 (NAT) and IPv6, and resolves a name; every port forward is
    tried. Each failure says what to look at. Needs root (it reads the firewall and
    enters the containers).

    \b
    Exit codes:
      0  every check passed
      1  a check failed
      2  the command line or the configuration file is invalid (nothing read)
      3  fjord could not run the checks: not root (needs root), or an error
    """
    from rich.markup import escape

    from fjord.check import run_checks
    from fjord.ui import console, print_json

    desired = _load(config_path)
    with _unreadable_on_error():
        require_root("fjord check")
        results = run_checks(desired)
    if as_json:
        print_json({"checks": [r.as_json() for r in results]})
    else:
        out = console()
        for r in results:
            mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
            out.print(f"{mark} {escape(r.name)}  [dim]{escape(r.detail)}[/]")
        failed = sum(1 for r in results if not r.ok)
        out.print(f"{len(results) - failed} passed, {failed} failed")
    if any(not r.ok for r in results):
        sys.exit(EXIT_FAILED)


@contextlib.contextmanager
def _unreadable_on_error() -> Iterator[None]:
    """For status and check, whose exit 1 means drift or a failed check: an error is
    "could not tell" (exit 3)."""
    from fjord.config.problems import ConfigError
    from fjord.errors import FjordError

    try:
        yield
    except FjordError as exc:
        if not isinstance(exc, ConfigError):
            exc.exit_code = EXIT_UNREADABLE
        raise


@cli.command()
def confirm() -> None:
    """Confirm a pending switchover (see `apply --confirm-timeout`).

    Run it over a new SSH connection: that it gets through is the proof that the host
    is still reachable. Without it, the guard restores the previous network state.
    `fjord --host SERVER apply` runs it for you, over a connection of its own.
    """
    from fjord.net import switchover

    require_root("fjord confirm")
    if not switchover.confirm():
        from fjord.errors import FjordError

        raise FjordError("no switchover is waiting for confirmation")
    click.echo("Switchover confirmed.")


@cli.command()
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> None:
    """Show the host and containers as they are, and what differs from the file.

    \b
    Exit codes:
      0  the host and its containers are as declared (no ✗, nothing unreadable)
      1  something differs from the file or fails (a ✗ line)
      2  the command line or the configuration file is invalid (nothing read)
      3  fjord could not tell: something could not be read (needs root, when not
         root) and nothing found differs, or an error
    """
    from fjord.status import collect, exit_code, render

    desired = _load(config_path)
    with _unreadable_on_error():
        report = collect(desired)
    if as_json:
        from fjord.ui import print_json

        print_json(report)
    else:
        from fjord.ui import console

        render(report, console())
    code = exit_code(report)
    if code == EXIT_FAILED and unreadable_verdict("status", _unread(report), True):
        code = EXIT_UNREADABLE
    elif code == EXIT_UNREADABLE:
        unreadable_verdict("status", _unread(report), False)
    sys.exit(code)


def _unread(report: dict[str, Any]) -> int:
    return len(report["unreadable"]) + sum(
        1 for c in report["containers"] if str(c.get("state", "")).startswith("unknown"))


def main() -> None:
    from fjord.errors import FjordError

    debug = "--debug" in sys.argv
    try:
        cli.main(prog_name="fjord", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted; nothing was changed.", err=True)
        sys.exit(1)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FjordError as exc:
        if debug:
            raise
        fail(exc)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
