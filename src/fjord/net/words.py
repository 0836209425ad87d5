"""Words that end up inside another program's language (nft's, OpenFlow's), each checked
against a strict pattern. Standard library only: the libvirt hook's port guard
(fjord.net.portguard) imports this while libvirt waits for a container's start."""

from __future__ import annotations

import re

# Same rule as the configuration's interface names (fjord.config.types): checked again
# here because these words end up inside nft's language (and in OpenFlow's: portguard).
IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def mac(value: str) -> str:
    """A MAC address (lower case, colon separated)."""
    if not isinstance(value, str) or not _MAC.fullmatch(value.lower()):
        raise ValueError(f"{value!r} is not a MAC address")
    return value.lower()
