"""With the userspace (netdev) datapath, the kernel still receives the frames arriving
on the uplink; when the bridge holds the uplink's MAC, the host answers twice. A netdev
ingress chain with policy drop on the uplink reproduces the kernel datapath's behaviour
(DESIGN fact 2). It is loaded when the uplink joins the bridge, removed when it leaves."""

from __future__ import annotations

from fjord.config.types import check_ifname
from fjord.runner import run

TABLE = "fjord-uplink"
PERSISTED = "/etc/fjord/uplink-guard.nft"


def render(uplink: str) -> str:
    name = check_ifname(uplink)  # validated: letters, digits, _ . - only
    return (
        f"# Managed by fjord: the uplink {name} belongs to the userspace Open vSwitch\n"
        f"# datapath; the kernel must not process its frames as well.\n"
        f"table netdev {TABLE}\ndelete table netdev {TABLE}\n"
        f"table netdev {TABLE} {{\n"
        f"  chain ingress {{\n"
        f'    type filter hook ingress device "{name}" priority 0; policy drop;\n'
        f"  }}\n}}\n"
    )


def loaded() -> bool:
    return run(["nft", "list", "table", "netdev", TABLE], check=False, timeout=10).ok


def check(uplink: str) -> None:
    run(["nft", "-c", "-f", "-"], input=render(uplink), timeout=10)


def load(uplink: str, *, checked: bool = False) -> None:
    if not checked:
        check(uplink)
    run(["nft", "-f", "-"], input=render(uplink), timeout=10)


def unload() -> None:
    run(["nft", "delete", "table", "netdev", TABLE], check=False, timeout=10)
