"""The server's files as the provider's installer leaves them (rendered from a LabSpec).

Values come from the validated configuration (addresses, an FQDN of [a-z0-9-.], an
interface name of [A-Za-z0-9_.-]); they are still checked here because they end up in
files that ifupdown and the resolver parse line by line.
"""

from __future__ import annotations

import re

from fjord.lab.spec import LabSpec

_SAFE = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def _safe(value: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{value!r} cannot be written into a configuration file")
    return value


def interfaces(spec: LabSpec) -> str:
    """/etc/network/interfaces of a freshly installed rented server (ifupdown)."""
    nic = _safe(spec.uplink)
    lines = [
        "# This file describes the network interfaces available on your system",
        "# and how to activate them. For more information, see interfaces(5).",
        "# (Initial state of the simulated server, written by `fjord lab up`.)",
        "",
        "source /etc/network/interfaces.d/*",
        "",
        "# The loopback network interface",
        "auto lo",
        "iface lo inet loopback",
        "",
        "# The primary network interface",
        f"auto {nic}",
        f"iface {nic} inet static",
        f"\taddress {_safe(spec.ipv4)}",
        f"\tgateway {_safe(spec.gateway4)}",
    ]
    if spec.onlink_gateway4:
        # Hetzner's documented setup for a /32 whose gateway is outside it
        lines.append(f"\tpointopoint {_safe(spec.gateway4)}")
    if spec.ipv6 and spec.gateway6:
        lines += [
            "",
            f"iface {nic} inet6 static",
            f"\taddress {_safe(spec.ipv6)}",
            f"\tgateway {_safe(spec.gateway6)}",
        ]
    return "\n".join(lines) + "\n"


def resolv_conf(spec: LabSpec) -> str:
    lines = []
    if spec.domain:
        lines.append(f"search {_safe(spec.domain)}")
    lines += [f"nameserver {_safe(a)}" for a in spec.dns[:3]]  # glibc reads three
    return "\n".join(lines) + "\n"


def hosts(spec: LabSpec) -> str:
    names = f"{_safe(spec.fqdn)} {_safe(spec.hostname)}"
    lines = ["127.0.0.1\tlocalhost", f"{spec.ipv4_interface.ip}\t{names}"]
    if spec.ipv6_interface is not None:
        lines.append(f"{spec.ipv6_interface.ip}\t{names}")
    lines += [
        "",
        "# The following lines are desirable for IPv6 capable hosts",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    return "\n".join(lines) + "\n"


def hostname(spec: LabSpec) -> str:
    return _safe(spec.hostname) + "\n"


def server_files(spec: LabSpec) -> dict[str, str]:
    """Path under /etc -> content, written into the lab's /etc before its first boot."""
    return {
        "network/interfaces": interfaces(spec),
        "resolv.conf": resolv_conf(spec),
        "hosts": hosts(spec),
        "hostname": hostname(spec),
    }
