"""`fjord status`: the host and containers as they are, and what differs from the file."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from fjord.config.desired import Desired


def collect(desired: Desired) -> dict[str, Any]:
    from fjord.engine.plan import make_plan
    from fjord.engine.resource import Context
    from fjord.resources import all_resources

    ctx = Context(desired)
    try:
        plan = make_plan(all_resources(desired), ctx)
    finally:
        ctx.close()
    from fjord.host import cgroups

    host = desired.host
    return {
        "cgroups": cgroups.status_report(),
        "host": {
            "fqdn": host.fqdn,
            "ipv4": str(host.ipv4.address),
            "ipv6": str(host.ipv6.address) if host.ipv6 else None,
            "private": str(host.private.address),
            "converged": plan.empty and not plan.unreadable,
        },
        "drift": [c.as_json() for c in plan.changes],
        "unreadable": [{"resource": u.resource, "reason": u.reason} for u in plan.unreadable],
        "in_order": [{"resource": u.resource, "state": u.reason} for u in plan.unchanged],
        "containers": [
            {"name": c.name, "fqdn": c.fqdn, "ipv4": str(c.ipv4),
             "ipv6": str(c.ipv6) if c.ipv6 else None}
            for c in desired.containers
        ],
    }


def render(report: dict[str, Any], out: Console) -> None:
    h = report["host"]
    state = "[green]as declared[/]" if h["converged"] else "[yellow]differs from the file[/]"
    out.print(f"[bold]{escape(h['fqdn'])}[/]  {state}")
    out.print(f"  public  {h['ipv4']}  {h['ipv6'] or '(no IPv6)'}")
    out.print(f"  private {h['private']}")
    cg = report.get("cgroups") or {}
    if cg:
        ok = cg.get("can_run_lxc")
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        layout = cg.get("layout")
        mode = layout.get("mode") if isinstance(layout, dict) else layout
        out.print(f"  {mark} cgroups: {escape(str(mode))} layout; memory limits "
                  f"{escape(str(cg.get('memory_limits')))}"
                  + (f"; {escape(str(cg.get('reason')))}" if cg.get("reason") else ""))
        if cg.get("fix"):
            out.print(f"      fix: {escape(str(cg['fix']))}"
                      + (" (needs a reboot)" if cg.get("reboot_needed") else ""))
    for item in report["in_order"]:
        out.print(f"  [green]✓[/] {escape(item['resource'])}: {escape(item['state'])}")
    for item in report["drift"]:
        out.print(f"  [yellow]✗[/] {escape(item['resource'])}: to {item['action']}: "
                  f"{escape(item['detail'])}")
    for item in report["unreadable"]:
        out.print(f"  [yellow]?[/] {escape(item['resource'])}: {escape(item['reason'])}")
    if report["containers"]:
        out.print("[bold]containers[/]")
        for c in report["containers"]:
            out.print(f"  {escape(c['name'])}  {escape(c['fqdn'])}  {c['ipv4']}  "
                      f"{c['ipv6'] or ''}")
