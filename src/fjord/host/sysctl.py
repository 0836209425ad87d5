"""Kernel parameters: those of the network stack fjord needs, and the file's
``host.sysctl``; set live and persisted in /etc/sysctl.d."""

from __future__ import annotations

from pathlib import Path

from fjord.config.desired import Desired
from fjord.engine.change import Change
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError
from fjord.host.files import File

PROC = Path("/proc/sys")
SYSCTL_FILE = Path("/etc/sysctl.d/60-fjord.conf")


# Keys that exist only while a module is loaded: br_netfilter's. Absent, nothing is set
# live, and the persisted file has them with systemd-sysctl's `-` (no error when absent).
OPTIONAL = "net.bridge."
# br_netfilter (loaded by Docker, Kubernetes, some firewalls) hands frames that a Linux
# bridge forwards to nftables' inet forward chain, whose policy is drop: bridged IPv6
# (neighbour discovery to the gateway included) and container-to-container traffic died.
# Open vSwitch never does that; fjord's firewall filters routed traffic only.
BRIDGE_NF = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
             "net.bridge.bridge-nf-call-arptables")


def _proc_path(key: str) -> Path:
    return PROC / key.replace(".", "/")


class Sysctl(Resource):
    kind = "sysctl"

    def __init__(self, key: str, value: str, reason: str) -> None:
        super().__init__(key)
        self.key = key
        self.value = value
        self.reason = reason
        # from the file's host.sysctl: a key this kernel does not have is an error
        self.declared = reason == DECLARED

    def read(self) -> str | None:
        try:
            return _proc_path(self.key).read_text().strip()
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise StateUnreadable(f"cannot read {_proc_path(self.key)}") from exc

    def changes(self, ctx: Context) -> list[Change]:
        actual = self.read()
        if actual is None and self.declared:
            raise FjordError(f"host.sysctl: {self.key} does not exist on this host "
                             f"({_proc_path(self.key)} is absent)",
                             hint="check the key's spelling, or load the module that has it")
        if actual is not None and actual.split() == self.value.split():
            return []  # tcp_rmem reads back "4096\t131072\t6291456"
        if actual is None and self.key.startswith(OPTIONAL):
            return []
        return [Change(self.id, "update", f"{self.key} = {self.value} ({self.reason}; is "
                       f"{actual if actual is not None else 'absent'})", self._set)]

    def unchanged_reason(self, ctx: Context) -> str:
        if self.read() is None:
            return f"{self.key} is absent (its module is not loaded)"
        return f"{self.key} is {self.value}"

    def _set(self, ctx: Context) -> None:
        _proc_path(self.key).write_text(self.value + "\n")


def wanted(desired: Desired) -> list[tuple[str, str, str]]:
    host = desired.host
    out = [("net.ipv4.ip_forward", "1", "route the containers' private network"),
           # Answer ARP only on the interface holding the address: the provider's segment
           # must not learn private addresses, and (userspace datapath) the kernel must
           # not answer for the gateway on the veths that are Open vSwitch ports.
           ("net.ipv4.conf.all.arp_ignore", "1", "answer ARP only where the address is")]
    if host.ipv6 is not None:
        out.append(("net.ipv6.conf.all.forwarding", "1", "route container IPv6"))
        if host.ipv6.effective_mode == "routed" and host.ipv6.proxy_ndp:
            out.append(("net.ipv6.conf.all.proxy_ndp", "1",
                        "answer neighbour solicitations for container addresses"))
    if host.switch.kind == "linux-bridge":
        out += [(key, "0", "bridged frames bypass nftables, as with Open vSwitch")
                for key in BRIDGE_NF]
    # the file's own, after fjord's (validation refused those fjord sets)
    out += [(key, value, DECLARED) for key, value in host.sysctl.items()]
    return out


DECLARED = "declared in host.sysctl"


def render(settings: list[tuple[str, str, str]]) -> str:
    lines = ["# Managed by fjord: changes here are overwritten by `fjord apply`."]
    for key, value, reason in settings:
        dash = "-" if key.startswith(OPTIONAL) else ""
        lines += [f"# {reason}", f"{dash}{key} = {value}"]
    return "\n".join(lines) + "\n"


def resources(desired: Desired) -> list[Resource]:
    settings = wanted(desired)
    out: list[Resource] = [File(SYSCTL_FILE, render(settings), reason="persist sysctl at boot")]
    out += [Sysctl(k, v, why) for k, v, why in settings]
    return out
