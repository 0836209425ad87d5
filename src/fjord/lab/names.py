"""What a lab is called on the machine: its namespaces, cgroup, directory and NIC.

Everything a lab creates on the machine is named from the lab's name here, so that two
labs never collide and `lab down` (or the next `lab up` after a crash) finds all of it.
Kept free of heavy imports: the enter helper loads it for every `lab exec`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fjord.errors import FjordError

DEFAULT_LABS_DIR = "/var/lib/fjord-labs"
NETNS_DIR = Path("/run/netns")
# Where a lab's namespace is mounted; /run/netns/NAME is a symlink to it (see
# fjord.lab.namespaces: out of reach of what `ip netns add` does to /run/netns).
MOUNTS_DIR = Path("/run/fjord-lab/netns")
# Lab names end up in namespace, cgroup and directory names: keep them short and plain.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")

# RFC 7042's documentation unicast range 00-00-5E-00-53-00..FF: the lab's NICs are
# "documentation MACs", like its addresses are documentation addresses.
_DOC_MAC_PREFIX = "00:00:5e:00:53"
ROUTER_MAC = f"{_DOC_MAC_PREFIX}:01"
FAR_MAC = f"{_DOC_MAC_PREFIX}:02"


def labs_dir() -> Path:
    return Path(os.environ.get("FJORD_LABS_DIR", DEFAULT_LABS_DIR))


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith("-") or "--" in name:
        raise FjordError(
            f"{name!r} is not a valid lab name",
            hint="use 1 to 24 lowercase letters, digits and single hyphens, starting with a "
                 "letter (e.g. lab, ci-3)",
        )
    return name


@dataclass(frozen=True)
class Names:
    """The machine-wide names of one lab."""

    lab: str

    def __post_init__(self) -> None:
        check_name(self.lab)

    @property
    def netns_upstream(self) -> str:
        return f"fjord-{self.lab}-up"

    @property
    def netns_server(self) -> str:
        return f"fjord-{self.lab}-host"

    @property
    def netns_far(self) -> str:
        return f"fjord-{self.lab}-far"

    @property
    def all_netns(self) -> tuple[str, str, str]:
        return (self.netns_upstream, self.netns_server, self.netns_far)

    @property
    def cgroup(self) -> str:
        """The per-lab sub-cgroup created under each controller's root."""
        return f"fjord-lab-{self.lab}"

    @property
    def dir(self) -> Path:
        return labs_dir() / self.lab

    @property
    def state_file(self) -> Path:
        return self.dir / "lab.json"

    @property
    def server_mac(self) -> str:
        """The server NIC's fixed MAC (kept across `lab reboot`, like a real NIC's)."""
        digest = hashlib.sha256(self.lab.encode()).digest()
        # 0x10..0xff: never the router's or the far host's MAC.
        return f"{_DOC_MAC_PREFIX}:{0x10 + digest[0] % 0xf0:02x}"


def netns_path(name: str) -> Path:
    """The name `ip netns` knows (a symlink to :func:`mount_path` for a lab's own)."""
    return NETNS_DIR / name


def mount_path(name: str) -> Path:
    """The file the namespace ``name`` is bind-mounted on."""
    return MOUNTS_DIR / name


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address the kernel derives from ``mac`` (modified EUI-64)."""
    octets = [int(x, 16) for x in mac.split(":")]
    if len(octets) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    octets[0] ^= 0x02
    iid = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)
