"""The configuration file as typed, immutable models.

Every key is declared once here, with its type, default and description; the JSON
Schema (`fjord schema`) and docs/configuration.md are derived from these models.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Address
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fjord.config.types import (
    FQDN,
    IP,
    IPV4_EXAMPLE,
    MAC,
    IfName,
    IPv4,
    IPv4Net,
    IPv6,
    IPv6Net,
    Name,
    Package,
    Port,
    Size,
    SSHKey,
    Suite,
)

Provider = Literal["generic", "hetzner", "ovh"]
# Providers known to drop or flag frames from MAC addresses other than the server's.
MAC_FILTERING_PROVIDERS: frozenset[str] = frozenset({"hetzner", "ovh"})


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Switch(Model):
    """How the bridges are built."""

    kind: Literal["ovs", "linux-bridge"] = Field(
        "ovs", description="Open vSwitch bridges, or plain Linux bridges."
    )
    datapath: Literal["system", "netdev"] = Field(
        "system",
        description="Open vSwitch datapath: `system` (kernel module, real servers) or "
        "`netdev` (userspace, for hosts without the openvswitch module, such as the lab).",
    )
    external: IfName = Field("br-ex", description="Bridge holding the uplink and public addresses.")
    internal: IfName = Field("br-int", description="Bridge of the private, NATed IPv4 network.")


class PublicIPv4(Model):
    address: IPv4Net = Field(description="The server's public IPv4 address with prefix length.",
                             examples=[IPV4_EXAMPLE])
    gateway: IPv4 = Field(description="The provider's IPv4 gateway (on-link).")


class PublicIPv6(Model):
    address: IPv6Net = Field(description="The server's own IPv6 address with its prefix (a /64).")
    gateway: IPv6 = Field(
        IPv6Address("fe80::1"),
        description="The provider's IPv6 gateway; link-local (fe80::1) is usual.",
    )
    mode: Literal["bridged", "routed"] | None = Field(
        None,
        description="How containers get public IPv6: `bridged` puts them on the uplink's "
        "segment with their own MACs (only where the provider accepts foreign MACs); `routed` "
        "has the host route their addresses (safe everywhere). Default: `routed`.",
    )
    proxy_ndp: bool = Field(
        True,
        description="In routed mode, answer the provider's neighbour solicitations for "
        "container addresses (needed when the /64 is on-link rather than routed).",
    )

    @property
    def effective_mode(self) -> Literal["bridged", "routed"]:
        return self.mode or "routed"


class Private(Model):
    address: IPv4Net = Field(
        IPv4Interface("10.1.0.1/16"),
        description="The host's address on the internal bridge; its network is the private "
        "range containers are given addresses from (NATed to the world).",
    )


class PortForward(Model):
    """Publish a container's service on the host's public IPv4 (DNAT)."""

    protocol: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp.")
    port: Port = Field(description="Public port on the host's IPv4 address.")
    container: Name = Field(description="Name of the container that receives it.")
    to_port: Port | None = Field(None, description="Port in the container (default: `port`).")

    @property
    def target_port(self) -> int:
        return self.to_port or self.port


class AptRepository(Model):
    """An extra APT repository, written as a deb822 .sources file with its own key."""

    name: Name = Field(description="File name stem under /etc/apt/sources.list.d/.")
    uris: list[Annotated[str, Field(pattern=r"^(https?|file)://[^\s]+$")]] = Field(min_length=1)
    suites: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9./_-]+$")]] = Field(min_length=1)
    components: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")]] = Field(
        default_factory=list
    )
    key: str = Field(
        description="The repository's signing key: ASCII-armoured text, stored as "
        "/etc/apt/keyrings/NAME.asc and referenced with Signed-By."
    )


class AptPin(Model):
    """One entry of /etc/apt/preferences.d/fjord."""

    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9*][a-z0-9+.*-]*$")]] = Field(
        default_factory=lambda: ["*"], description="Package names (or `*`)."
    )
    release: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+$")] = Field(
        description="Suite or codename the pin applies to (`testing`, `bookworm-backports`)."
    )
    priority: int = Field(ge=-1000, le=1001, description="APT pin priority.")


class Apt(Model):
    manage: bool = Field(True, description="Write APT sources and pinning.")
    mirror: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] = Field(
        "http://deb.debian.org/debian", description="Debian mirror for the host and images."
    )
    suite: Suite = Field("bookworm", description="The host's Debian suite.")
    components: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]] = Field(
        default_factory=lambda: ["main"]
    )
    security: bool = Field(True, description="Add the Debian security archive.")
    updates: bool = Field(True, description="Add SUITE-updates.")
    backports: bool = Field(False, description="Add SUITE-backports.")
    extra_suites: list[Suite] = Field(
        default_factory=list,
        description="Further suites from the mirror (e.g. `testing`), usually with pins.",
    )
    repositories: list[AptRepository] = Field(default_factory=list)
    pins: list[AptPin] = Field(default_factory=list)


class Capacity(Model):
    """What the host can give containers (default: what the machine running fjord has)."""

    memory: Size | None = None
    cpus: int | None = Field(None, ge=1, le=4096)


class Host(Model):
    fqdn: FQDN = Field(description="The host's fully qualified domain name.")
    provider: Provider = Field(
        "generic",
        description="Hosting provider; `hetzner` and `ovh` filter MAC addresses, so bridged "
        "IPv6 is refused there.",
    )
    uplink: IfName = Field("eth0", description="The physical NIC, moved into the external bridge.")
    switch: Switch = Field(default_factory=Switch)
    ipv4: PublicIPv4
    ipv6: PublicIPv6 | None = Field(None, description="Public IPv6; omit for an IPv4-only host.")
    private: Private = Field(default_factory=Private)
    dns: list[IP] = Field(min_length=1, description="DNS servers for the host and containers.")
    ssh_port: Port = Field(22, description="The host's own SSH port (never forwarded).")
    forwards: list[PortForward] = Field(default_factory=list)
    apt: Apt = Field(default_factory=Apt)
    packages: list[Package] = Field(
        default_factory=list, description="Extra Debian packages for the host."
    )
    capacity: Capacity = Field(default_factory=Capacity)

    @property
    def domain(self) -> str:
        return self.fqdn.partition(".")[2] or self.fqdn

    @property
    def hostname(self) -> str:
        return self.fqdn.partition(".")[0]


class Puppet(Model):
    server: FQDN = Field(description="The Puppet server the agent talks to.")
    enable: bool = Field(False, description="Start the agent at boot (off: installed only).")


class ContainerSettings(Model):
    """Settings a container may take from `defaults`."""

    domain: FQDN | None = Field(
        None, description="Domain; the FQDN is NAME.DOMAIN (default: the host's domain)."
    )
    suite: Suite | None = Field(None, description="Debian suite (default: bookworm).")
    packages: list[Package] | None = Field(
        None, description="Packages added to the image (replaces the default's list)."
    )
    memory: Size | None = Field(None, description="Memory limit (default: 512MiB).")
    vcpus: int | None = Field(None, ge=1, le=4096, description="Virtual CPUs (default: 1).")
    cpu_shares: int | None = Field(
        None, ge=2, le=262144, description="Relative CPU weight (default: 1024)."
    )
    ssh_keys: list[SSHKey] | None = Field(
        None, description="OpenSSH public keys for root's authorized_keys."
    )
    puppet: Puppet | None = Field(None, description="Install and point a Puppet agent.")
    autostart: bool | None = Field(None, description="Start with the host (default: true).")
    rootfs: Literal["overlay", "copy"] | None = Field(
        None,
        description="`overlay`: overlayfs over the shared image (fast, small); `copy`: an "
        "independent full copy. Default: overlay.",
    )
    locale: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")] | None = Field(
        None, description="Default locale (default: C.UTF-8)."
    )


class Defaults(ContainerSettings):
    """Values every container takes unless it sets its own."""


class Macs(Model):
    private: MAC | None = Field(None, description="MAC on the internal bridge.")
    public: MAC | None = Field(None, description="MAC on the external bridge.")


class ContainerSpec(ContainerSettings):
    ipv4: IPv4 | None = Field(None, description="Private IPv4 (default: allocated).")
    ipv6: IPv6 | None = Field(None, description="Public IPv6 from the host's /64 (default: "
                              "allocated when the host has IPv6).")
    mac: Macs = Field(default_factory=Macs, description="MACs (default: allocated, stable).")


class Config(Model):
    version: Literal[1] = Field(1, description="Format version of this file.")
    host: Host
    defaults: Defaults = Field(default_factory=Defaults)
    containers: dict[Name, ContainerSpec] = Field(default_factory=dict)

    @field_validator("containers", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value
