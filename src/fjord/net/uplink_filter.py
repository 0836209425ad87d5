"""With the userspace (netdev) datapath, the kernel still receives the frames arriving
on the uplink; when the bridge holds the uplink's MAC, the host answers twice. A netdev
ingress chain with policy drop on the uplink reproduces the kernel datapath's behaviour
(DESIGN fact 2). It is loaded when the uplink joins the bridge, removed when it leaves."""

from __future__ import annotations

from fjord.config.types import check_ifname
from fjord.errors import FjordError
from fjord.net.nft import BaseChain, Nft, Table, has_table

TABLE = "fjord-uplink"
PERSISTED = "/etc/fjord/uplink-guard.nft"


def table(uplink: str) -> Table:
    """The netdev table: one ingress chain on the uplink, policy drop (built with the
    same checked words as the firewall's tables, fjord.net.nft)."""
    name = check_ifname(uplink)
    return Table("netdev", TABLE, (
        BaseChain("ingress", "filter", "ingress", "0", policy="drop", device=name),),
        header=(f"Managed by fjord: the uplink {name} belongs to the userspace Open vSwitch",
                "datapath; the kernel must not process its frames as well."))


def render(uplink: str) -> str:
    return table(uplink).render()


def loaded(nft: Nft | None = None) -> bool:
    """Whether the table is in the kernel. ``nft``: the run's driver (its ruleset is read
    once per plan, shared with the firewall's check for other firewalls); when its JSON
    cannot be read, nft is asked for the table alone."""
    nft = nft or Nft()
    try:
        return has_table(nft.ruleset(), "netdev", TABLE)
    except FjordError:
        pass
    try:
        return nft.list_table("netdev", TABLE) is not None
    except FjordError:
        return False


def check(uplink: str) -> None:
    Nft().check(render(uplink))


def load(uplink: str, *, checked: bool = False) -> None:
    """Load the table atomically (``nft -c`` first; ``checked``: done already)."""
    nft = Nft()
    text = render(uplink)
    if checked:
        nft.load_checked(text)
    else:
        nft.load(text)


def unload() -> None:
    """Remove the table if it is there (a rollback: never raises)."""
    try:
        Nft().delete_table("netdev", TABLE)
    except FjordError:
        pass
