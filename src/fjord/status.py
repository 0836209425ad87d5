"""`fjord status`: the host and containers as they are, and what differs from the file."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from fjord.config.desired import Desired, with_kept
from fjord.containers import libvirt, limits
from fjord.engine.plan import StateUnreadable, make_plan
from fjord.engine.resource import Context
from fjord.host import cgroups
from fjord.resources import all_resources


def collect(desired: Desired) -> dict[str, Any]:
    ctx = Context(desired)
    try:
        plan = make_plan(all_resources(desired), ctx)
    finally:
        ctx.close()

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
        "containers": _with_problems(_containers(desired), plan.unreadable),
    }


CONTAINER_KINDS = ("rootfs", "domain", "container")


def _with_problems(containers: list[dict[str, Any]], unreadable: list[Any]
                   ) -> list[dict[str, Any]]:
    """Each container with what could not be read of it (its root's files refused, say),
    so that the problem is shown on the container it concerns."""
    for item in containers:
        mine = [u.reason for u in unreadable
                if u.resource in {f"{k} {item['name']}" for k in CONTAINER_KINDS}]
        if mine:
            item["problems"] = mine
    return containers


def _containers(desired: Desired) -> list[dict[str, Any]]:
    """Each container of the file, and each one fjord made that the file no longer names,
    as libvirt sees it (or why it cannot be read)."""
    declared = {c.name for c in desired.containers}
    lv = libvirt.Libvirt()
    out = []
    try:
        for c in with_kept(desired).containers:
            item: dict[str, Any] = {
                "name": c.name, "fqdn": c.fqdn, "ipv4": str(c.ipv4),
                "ipv6": str(c.ipv6) if c.ipv6 else None, "in_file": c.name in declared}
            try:
                state = lv.domain(c.name)
                item["state"] = ("running" if state and state.running else
                                 "stopped" if state else "not defined")
                item["autostart"] = state.autostart if state else None
                item["memory_used"] = lv.memory_usage(c.name)
                item["memory_limit"] = c.memory if c.name in declared else None
                if state is not None and state.running:
                    # the same lines as `fjord check`'s, from the same readings
                    lines = limits.verdicts(c.name, expected=item["memory_limit"])
                    item["cgroups"] = [{"check": what, "ok": ok, "detail": why}
                                       for what, ok, why in lines]
                    ok, why = lines[0][1], lines[0][2]
                    item["limits_enforced"] = {"ok": ok, "detail": why}
            except StateUnreadable as exc:
                item["state"] = f"unknown ({exc.message})"
            out.append(item)
    finally:
        lv.close()
    return out


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
            state = c.get("state", "")
            colour = "green" if state == "running" else "yellow"
            mem = f"  {c['memory_used'] >> 20} MiB used" if c.get("memory_used") else ""
            kept = "" if c["in_file"] else "  (not in the file: kept until --prune)"
            out.print(f"  {escape(c['name'])}  [{colour}]{escape(state)}[/]  "
                      f"{escape(c['fqdn'])}  {c['ipv4']}  {c['ipv6'] or ''}{mem}{kept}")
            for problem in c.get("problems") or []:
                out.print(f"    [yellow]?[/] cannot read: {escape(problem)}")
            for line in c.get("cgroups") or []:
                mark = "[green]✓[/]" if line["ok"] else "[red]✗[/]"
                out.print(f"    {mark} {escape(line['check'])}  [dim]{escape(line['detail'])}[/]")


def exit_code(report: dict[str, Any]) -> int:
    """`fjord status`'s verdict (see `fjord status --help`): 1 when a line is a ✗
    (drift, cgroups that cannot run containers, a container's cgroup check failing),
    else 3 when something could not be read, else 0."""
    cg = report.get("cgroups") or {}
    failed = (bool(report["drift"]) or (bool(cg) and not cg.get("can_run_lxc"))
              or any(not line["ok"] for c in report["containers"]
                     for line in c.get("cgroups") or []))
    if failed:
        return 1
    unread = bool(report["unreadable"]) or any(
        str(c.get("state", "")).startswith("unknown") for c in report["containers"])
    return 3 if unread else 0
