"""The configuration file as typed, immutable models.

Every key is declared once here, with its type, default and description; the JSON
Schema (`fjord schema`) and docs/configuration.md are derived from these models.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Address
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import GenerateJsonSchema

from fjord.config.types import (
    FQDN,
    IP,
    IPV4_EXAMPLE,
    MAC,
    ArmouredKey,
    IfName,
    IPv4,
    IPv4Net,
    IPv6,
    IPv6Net,
    Name,
    Package,
    Port,
    Release,
    Size,
    SSHKey,
    Suite,
    SysctlKey,
    SysctlValue,
)

Provider = Literal["generic", "hetzner", "ovh"]
# Providers known to drop or flag frames from MAC addresses other than the server's.
MAC_FILTERING_PROVIDERS: frozenset[str] = frozenset({"hetzner", "ovh"})


# What a URL may contain (RFC 3986): no space, quote, backslash, control or invisible
# character, nothing outside ASCII. (An IRI must be percent-encoded.) URLs are written
# into APT's sources files and shown in plans.
URL_CHARS = r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Switch(Model):
    """How the bridges are built."""

    kind: Literal["ovs", "linux-bridge"] = Field(
        "ovs", description="Open vSwitch bridges, or plain Linux bridges.",
        examples=["ovs"],
    )
    datapath: Literal["system", "netdev"] = Field(
        "system",
        description="Open vSwitch datapath: `system` (kernel module, real servers) or "
        "`netdev` (userspace, for hosts without the openvswitch module, such as the lab).",
        examples=["netdev"],
    )
    external: IfName = Field("br-ex", description="Bridge holding the uplink and public addresses.",
                             examples=["br-ex"])
    internal: IfName = Field("br-int", description="Bridge of the private, NATed IPv4 network.",
                             examples=["br-int"])


class PublicIPv4(Model):
    """The server's public IPv4 address, as the provider assigned it."""

    address: IPv4Net = Field(description="The server's public IPv4 address with prefix length.",
                             examples=[IPV4_EXAMPLE])
    gateway: IPv4 = Field(description="The provider's IPv4 gateway: inside the address's "
                          "network, or outside it when the provider puts it on-link anyway "
                          "(a /32 address, or `gateway_onlink: true`).",
                          examples=["192.0.2.1"])
    gateway_onlink: bool = Field(
        False,
        description="The gateway is reachable on the uplink's link although it is outside the "
        "address's network (Hetzner Cloud: a /32 and gateway 172.31.1.1). The host then gets a "
        "host route to the gateway on the external bridge and the default route via it. "
        "Implied for a /32 address, whose network holds no gateway.",
        examples=[True],
    )

    @property
    def onlink_gateway(self) -> bool:
        """The gateway is outside the address's network and needs its own link route."""
        return self.gateway not in self.address.network


class PublicIPv6(Model):
    """The server's IPv6 prefix; containers get public addresses from it."""

    address: IPv6Net = Field(description="The server's own IPv6 address with its prefix, a "
                             "/64 (containers get addresses from it; of a larger assignment "
                             "such as a /56, give the /64 the server's address is in).",
                             examples=["2001:db8:151:7307::2/64"])
    gateway: IPv6 = Field(
        IPv6Address("fe80::1"),
        description="The provider's IPv6 gateway: link-local (fe80::1, usual) or inside the "
        "prefix.",
        examples=["fe80::1"],
    )
    mode: Literal["bridged", "routed"] | None = Field(
        None,
        description="How containers get public IPv6: `bridged` puts them on the uplink's "
        "segment with their own MACs (only where the provider accepts foreign MACs); `routed` "
        "has the host route their addresses (safe everywhere). Default: `routed`.",
        examples=["routed"],
    )
    proxy_ndp: bool = Field(
        True,
        description="In routed mode, answer the provider's neighbour solicitations for "
        "container addresses (needed when the /64 is on-link rather than routed).",
        examples=[True],
    )

    @property
    def effective_mode(self) -> Literal["bridged", "routed"]:
        return self.mode or "routed"


class Private(Model):
    """The private IPv4 network of the containers, behind NAT."""

    address: IPv4Net = Field(
        IPv4Interface("10.1.0.1/16"),
        description="The host's address on the internal bridge; its network is the private "
        "range containers are given addresses from (NATed to the world). It must lie in "
        "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16.",
        examples=["10.1.0.1/16"],
    )


class PortForward(Model):
    """Publish a container's service on the host's public IPv4 (DNAT)."""

    protocol: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp.", examples=["tcp"])
    port: Port = Field(description="Public port on the host's IPv4 address (never the host's "
                       "own SSH port).", examples=[2222])
    container: Name = Field(description="Name of the container that receives it.",
                            examples=["web"])
    to_port: Port | None = Field(None, description="Port in the container (default: `port`).",
                                 examples=[22])

    @property
    def target_port(self) -> int:
        return self.to_port or self.port


class HostFirewall(Model):
    """The host's own input firewall (table inet fjord-input): new connections to the host
    itself are dropped, except SSH, ICMP and ICMPv6, loopback, and the ports listed here.
    Replies to the host's own connections, containers and port forwards are not affected."""

    tcp: list[Port] = Field(
        default_factory=list,
        description="TCP ports of the host's own services open to everyone. SSH "
        "(`host.ssh_port`) is always open; listing it changes nothing.",
        examples=[[80, 443]])
    udp: list[Port] = Field(default_factory=list,
                            description="UDP ports of the host's own services open to everyone.",
                            examples=[[51820]])


class AptRepository(Model):
    """An extra APT repository, written as a deb822 .sources file with its own key."""

    name: Name = Field(description="File name stem under /etc/apt/sources.list.d/.",
                       examples=["puppet"])
    uris: list[Annotated[str, Field(pattern=rf"^(https?|file)://{URL_CHARS}$")]] = Field(
        min_length=1, description="Repository URIs (http, https or file).",
        examples=[["http://apt.puppetlabs.com"]],
    )
    suites: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9./_-]+$")]] = Field(
        min_length=1, description="Suites to take from it.", examples=[["bookworm"]]
    )
    components: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")]] = Field(
        default_factory=list, description="Components (empty for flat repositories).",
        examples=[["puppet8"]],
    )
    key: ArmouredKey = Field(
        description="The repository's signing key: ASCII-armoured text, stored as "
        "/etc/apt/keyrings/NAME.asc and referenced with Signed-By.",
        examples=["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF...\n"
                  "-----END PGP PUBLIC KEY BLOCK-----"],
    )


class AptPin(Model):
    """One entry of /etc/apt/preferences.d/fjord."""

    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9*][a-z0-9+.*-]*$")]] = Field(
        default_factory=lambda: ["*"], description="Package names (or `*`).",
        examples=[["lxc"]],
    )
    release: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+$")] = Field(
        description="Suite or codename the pin applies to (`testing`, `bookworm-backports`).",
        examples=["testing"],
    )
    priority: int = Field(ge=-1000, le=1001, description="APT pin priority (-1000 to 1001).",
                          examples=[100])


class Apt(Model):
    """APT on the host: sources, pinning; the mirror also builds the images."""

    manage: bool = Field(True, description="Write APT sources and pinning.", examples=[True])
    mirror: Annotated[str, Field(pattern=rf"^https?://{URL_CHARS}$")] = Field(
        "http://deb.debian.org/debian", description="Debian mirror for the host and images.",
        examples=["http://deb.debian.org/debian"],
    )
    suite: Release | None = Field(
        None, description="The host's Debian suite, for its APT sources: `bookworm`, "
        "`trixie`, or `sid` (also called `unstable`). Default: the release the host runs, "
        "read from its /etc/os-release (`VERSION_CODENAME`) when fjord knows it; on a host "
        "whose release fjord does not know (another distribution, Debian testing naming "
        "a release not supported yet) `plan` and `apply` stop and ask for it, they never "
        "guess. Containers do not follow it (see `defaults.suite`).",
        examples=["trixie"])
    components: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]] = Field(
        default_factory=lambda: ["main"], description="Archive components.",
        examples=[["main", "contrib"]],
    )
    security: bool = Field(True, description="Add the Debian security archive.",
                           examples=[True])
    updates: bool = Field(True, description="Add SUITE-updates.", examples=[True])
    backports: bool = Field(False, description="Add SUITE-backports.", examples=[True])
    extra_suites: list[Suite] = Field(
        default_factory=list,
        description="Further suites from the mirror (e.g. `testing`), usually with pins.",
        examples=[["testing"]],
    )
    repositories: list[AptRepository] = Field(
        default_factory=list, description="Extra APT repositories, each with its signing key."
    )
    pins: list[AptPin] = Field(
        default_factory=list, description="APT pinning (/etc/apt/preferences.d/fjord)."
    )


class Cgroups(Model):
    """The host's cgroup layout (see docs/host.md: which layouts enforce limits)."""

    unified: bool = Field(
        False, description="Boot with the unified cgroup hierarchy (cgroup v2 only): fjord "
        "writes /etc/default/grub.d/fjord.cfg with systemd.unified_cgroup_hierarchy=1 and "
        "runs update-grub. Takes effect at the next reboot.", examples=[True])


class CheckTargets(Model):
    """What `fjord check` asks of each container, besides its host."""

    ipv4: IPv4 | None = Field(
        None, description="An IPv4 address outside to ping from each container (through "
        "NAT). Default: the first IPv4 DNS server.", examples=["198.51.100.10"])
    ipv6: IPv6 | None = Field(
        None, description="An IPv6 address outside to ping from each container. Default: "
        "the first IPv6 DNS server.", examples=["2001:db8:ffff::10"])
    name: FQDN = Field("deb.debian.org", description="A name each container must resolve.",
                       examples=["far.example.org"])


class Capacity(Model):
    """What the host can give containers (default: what the machine running fjord has)."""

    memory: Size | None = Field(
        None, description="Memory for containers; no container may have a larger limit "
        "(default: this machine's memory).", examples=["32GiB"],
    )
    cpus: int | None = Field(
        None, ge=1, le=4096, description="CPUs; no container may have more vCPUs "
        "(default: this machine's CPU count).", examples=[8],
    )


class Host(Model):
    """The server itself: its name, network, APT and what it can give containers."""

    fqdn: FQDN = Field(description="The host's fully qualified domain name.",
                       examples=["oslo.example.net"])
    provider: Provider = Field(
        "generic",
        description="Hosting provider; `hetzner` and `ovh` filter MAC addresses, so bridged "
        "IPv6 is refused there.",
        examples=["hetzner"],
    )
    uplink: IfName = Field("eth0", description="The physical NIC, moved into the external bridge.",
                           examples=["eth0"])
    switch: Switch = Field(default_factory=Switch)
    ipv4: PublicIPv4
    ipv6: PublicIPv6 | None = Field(None, description="Public IPv6; omit for an IPv4-only host.")
    private: Private = Field(default_factory=Private)
    dns: list[IP] = Field(min_length=1, description="DNS servers for the host and containers.",
                          examples=[["192.0.2.53", "2001:db8:53::53"]])
    ssh_port: Port = Field(22, description="The host's own SSH port (never forwarded).",
                           examples=[22])
    forwards: list[PortForward] = Field(
        default_factory=list, description="Port forwards from the public IPv4 to containers."
    )
    firewall: HostFirewall | None = Field(
        None,
        description="Filter what reaches the host itself (its own input): loaded now and at "
        "every boot before the interfaces come up (/etc/fjord/input.nft). Omit it and "
        "nothing filters the host's own ports; removing it removes the table at the next "
        "apply. `plan` refuses to load it while sshd listens on a TCP port it would drop.",
    )
    apt: Apt = Field(default_factory=Apt)
    packages: list[Package] = Field(
        default_factory=list, description="Extra Debian packages for the host.",
        examples=[["emacs-nox", "dbus"]],
    )
    capacity: Capacity = Field(default_factory=Capacity)
    check: CheckTargets = Field(default_factory=CheckTargets)
    cgroups: Cgroups = Field(default_factory=Cgroups)
    sysctl: dict[SysctlKey, SysctlValue] = Field(
        default_factory=dict,
        description="Kernel parameters of the host: set now and at every boot "
        "(/etc/sysctl.d/60-fjord.conf). A key must exist on the host (plan says so "
        "otherwise); those fjord sets itself (forwarding, ARP, proxy NDP, bridge "
        "netfilter) are refused.",
        examples=[{"net.core.somaxconn": 4096, "net.ipv4.tcp_syncookies": 1}])

    @property
    def domain(self) -> str:
        return self.fqdn.partition(".")[2] or self.fqdn

    @property
    def hostname(self) -> str:
        return self.fqdn.partition(".")[0]


class Puppet(Model):
    """A Puppet agent in the container, pointed at a Puppet server."""

    server: FQDN = Field(description="The Puppet server the agent talks to.",
                         examples=["tromso.example.net"])
    enable: bool = Field(False, description="Start the agent at boot (off: installed only).",
                         examples=[True])


class ContainerSettings(Model):
    """Settings a container may take from `defaults`."""

    domain: FQDN | None = Field(
        None, description="Domain; the FQDN is NAME.DOMAIN (default: the host's domain, "
        "its FQDN without the first label).", examples=["example.net"],
    )
    suite: Release | None = Field(
        None, description="Debian suite: `bookworm`, `trixie`, or `sid` (also called "
        "`unstable`), whatever the host runs. When neither the container nor `defaults` "
        "names one, an existing container keeps the suite it was built from (its record): "
        "a built-in default that moves on never rebuilds it; a new one gets the current "
        "stable release (default: trixie).", examples=["trixie"])
    packages: list[Package] | None = Field(
        None, description="Packages added to the image (replaces the default's list).",
        examples=[["nginx", "curl"]],
    )
    memory: Size | None = Field(None, description="Memory limit (default: 512MiB).",
                                examples=["512MiB", "2G"])
    vcpus: int | None = Field(None, ge=1, le=4096, description="Virtual CPUs (default: 1).",
                              examples=[2])
    cpu_shares: int | None = Field(
        None, ge=2, le=262144, description="Relative CPU weight (default: 1024).",
        examples=[512],
    )
    ssh_keys: list[SSHKey] | None = Field(
        None, description="OpenSSH public keys for root's authorized_keys (replaces the "
        "default's list).",
        examples=[["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sR"
                   "Nj8oO5Df admin@example.net"]],
    )
    puppet: Puppet | None = Field(None, description="Install and point a Puppet agent.")
    autostart: bool | None = Field(None, description="Start with the host; a `stopped` "
                                   "container never does (default: true).", examples=[False])
    state: Literal["running", "stopped"] | None = Field(
        None, description="The declared run state. `running`: `fjord apply` starts it; "
        "`stopped`: defined but not started, not at boot either, and `fjord apply` shuts it "
        "down if it runs (default: running).", examples=["stopped"],
    )
    rootfs: Literal["overlay", "copy"] | None = Field(
        None,
        description="`overlay`: overlayfs over the shared image (fast, small); `copy`: an "
        "independent full copy (default: overlay).",
        examples=["copy"],
    )
    locale: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")] | None = Field(
        None, description="Default locale (default: C.UTF-8).", examples=["en_US.UTF-8"]
    )
    privileged: bool | None = Field(
        None, description="`false`: the container runs in a user namespace of its own, its "
        "root a range of 65536 host ids nobody else uses (1000000000 and up); `true`: no user "
        "namespace, root in the container is root on the host (`plan` warns). A privileged "
        "container set unprivileged is converted by `apply`, its data kept (its files given "
        "to the range, restarted); the reverse takes a re-creation (default: false).",
        examples=[True],
    )


# What a container gets for a setting that neither it nor `defaults` sets. (`domain`
# comes from the host: its domain. `suite` is this one for a new container only: an
# existing container keeps the suite it was built from, see desired.py.)
BUILT_IN: dict[str, Any] = {
    "suite": "trixie",
    "packages": [],
    "memory": 512 << 20,
    "vcpus": 1,
    "cpu_shares": 1024,
    "ssh_keys": [],
    "puppet": None,
    "autostart": True,
    "state": "running",
    "rootfs": "overlay",
    "locale": "C.UTF-8",
    "privileged": False,
}


class Defaults(ContainerSettings):
    """Values every container takes unless it sets its own."""


class Macs(Model):
    """The container's MAC addresses (default: allocated in 52:54:00:xx:xx:xx, stable)."""

    private: MAC | None = Field(None, description="MAC on the internal bridge.",
                                examples=["52:54:00:12:34:56"])
    public: MAC | None = Field(None, description="MAC on the external bridge (hosts with IPv6).",
                               examples=["52:54:00:65:43:21"])


class ContainerSpec(ContainerSettings):
    """One container; any setting it leaves out comes from `defaults`."""

    ipv4: IPv4 | None = Field(None, description="Private IPv4 from `host.private` (default: "
                              "the lowest free one, then kept).", examples=["10.1.0.2"])
    ipv6: IPv6 | None = Field(None, description="Public IPv6 from the host's /64 (default: "
                              "allocated from PREFIX:1::1 when the host has IPv6, then kept).",
                              examples=["2001:db8:151:7307:1::1"])
    mac: Macs = Field(default_factory=Macs, description="MACs (default: allocated, stable).")


class Config(Model):
    """A fjord configuration file."""

    version: Literal[1] = Field(1, description="Format version of this file.", examples=[1])
    host: Host
    defaults: Defaults = Field(default_factory=Defaults)
    containers: dict[Name, ContainerSpec] = Field(
        default_factory=dict,
        description="The containers, by name (a DNS label: lowercase letters, digits, hyphens).",
        json_schema_extra={"additionalProperties": False},
    )

    @field_validator("defaults", mode="before")
    @classmethod
    def _no_defaults(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("containers", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        # `containers:` with nothing under it, and `  web:` with no settings, are natural
        # ways to write "none" and "all defaults".
        if value is None:
            return {}
        if isinstance(value, dict):
            return {k: {} if v is None else v for k, v in value.items()}
        return value


class _SchemaGenerator(GenerateJsonSchema):
    # Field titles would only repeat the key ("Fqdn"); types keep theirs ("domain name").
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file (`fjord schema`, editors, the reference)."""
    schema = Config.model_json_schema(schema_generator=_SchemaGenerator)
    # The loader reads an empty `defaults:`, `containers:` or `  web:` as empty (see
    # Config's validators); say so, or editors flag what fjord accepts.
    props = schema["properties"]
    for key in ("defaults", "containers"):
        inner = props[key]
        outer = {k: inner.pop(k) for k in ("description", "default") if k in inner}
        props[key] = {**outer, "anyOf": [inner, {"type": "null"}]}
    names = props["containers"]["anyOf"][0]["patternProperties"]
    for pattern, spec in names.items():
        names[pattern] = {"anyOf": [spec, {"type": "null"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "fjord configuration",
        **{k: v for k, v in schema.items() if k != "title"},
    }
