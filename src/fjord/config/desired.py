"""The desired state: a checked Config with defaults applied and addresses allocated.

Allocation is stable: a container keeps what it was given (``Known.addresses``: what
/var/lib/fjord/allocations.json and the containers' records remember, read by the state
layer, fjord.state.known), new containers take the lowest free addresses, and MACs
derive from the host and container names. This module reads the file and nothing else:
what the host holds is an argument, and writing the allocations is a change of the plan.

``host.apt.suite`` not given is the release the host runs (``Known.host_release``, read
from its /etc/os-release by the state layer), when it is one fjord knows; otherwise it
stays unset, and the APT layer stops with a problem at ``host.apt.suite`` before anything
is planned (:meth:`Desired.suite_unknown`): fjord never guesses a server's release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from fjord.config.loader import Document, read
from fjord.config.models import BUILT_IN, Config, ContainerSpec, Host, Puppet
from fjord.config.problems import ConfigError, Problem, printable
from fjord.config.types import RELEASES, check_mac
from fjord.config.validate import check

# Containers' public IPv6 addresses start at PREFIX:1::1, as in the original setup.
IPV6_CONTAINER_BASE = 1 << 48
IPV6_SEARCH = 1 << 16
MAC_PREFIX = "52:54:00:"


@dataclass(frozen=True)
class HostRelease:
    """The release the host runs, as its os-release file says (fjord.state.known reads
    it): ``codename`` is a release fjord knows (types.RELEASES) or None (another
    distribution, Debian testing/unstable naming a release fjord does not know yet, no
    file); ``said`` is what the file says, for messages (``VERSION_CODENAME=trixie``)."""

    codename: str | None
    said: str
    path: str = "/etc/os-release"

    def __post_init__(self) -> None:
        if self.codename is not None and self.codename not in RELEASES:
            raise ValueError(f"{self.codename} is not a release fjord knows")

    def shown(self) -> str:
        return f"{self.path}: {printable(self.said)}"


@dataclass(frozen=True)
class Known:
    """What the host holds that the desired state depends on, read by the state layer
    (fjord.state.known): the addresses each container was given (allocations.json,
    completed from the containers' records; also those of containers out of the file,
    not yet pruned), the suite each existing container was built from, and the release
    the host runs (None: not read). The default: a host with nothing (a fresh server)
    whose release is not known."""

    addresses: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    suites: Mapping[str, str] = field(default_factory=dict)
    host_release: HostRelease | None = None


NOTHING = Known()


@dataclass(frozen=True)
class Container:
    name: str
    fqdn: str
    ipv4: IPv4Address
    ipv6: IPv6Address | None
    mac_private: str
    mac_public: str | None
    suite: str
    packages: tuple[str, ...]
    memory: int
    vcpus: int
    cpu_shares: int
    ssh_keys: tuple[str, ...]
    puppet: Puppet | None
    autostart: bool
    rootfs: str
    locale: str
    state: str = "running"  # declared run state: running or stopped
    privileged: bool = True  # no user namespace (root in it is root on the host)
    privileged_explicit: bool = False  # `privileged: true` written in the file
    # the file names no suite and the container keeps the one it was built from (this
    # one), not the built-in default of new containers; None otherwise
    suite_kept: str | None = None


@dataclass(frozen=True)
class Desired:
    config: Config
    containers: tuple[Container, ...]
    allocations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    filename: str | None = None
    # the file names no host.apt.suite and it is the host's release, read there (None:
    # the file names it, or the host's release is not one fjord knows)
    apt_suite_from: HostRelease | None = None
    # the host's release as known when resolving (None: not read), for suite_unknown()
    host_release: HostRelease | None = None

    @property
    def host(self) -> Host:
        return self.config.host

    def suite_unknown(self) -> Problem | None:
        """The problem at ``host.apt.suite`` when APT is managed, the file names no
        suite and the host's release is not one fjord knows (or was not read); the APT
        layer raises it (ConfigError) before anything is planned."""
        apt = self.config.host.apt
        if not apt.manage or apt.suite is not None:
            return None
        choices = ", ".join(RELEASES[:-1]) + " or " + RELEASES[-1]
        if self.host_release is None:
            said = "the host's release was not read"
        else:
            said = (f"the host's release is not one fjord knows "
                    f"({self.host_release.shown()})")
        return Problem(("host", "apt", "suite"), (
            f"not given, and {said}: fjord does not guess which Debian release's sources "
            f"to write; name the release this server runs ({choices}), or set "
            "host.apt.manage: false to keep your own APT sources"))

    def container(self, name: str) -> Container:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(name)


def load(path: str, known: Known = NOTHING) -> Desired:
    """Read, check and resolve a configuration file (raises ConfigError, exit 2), given
    what the host holds (default: nothing, as on a fresh server)."""
    doc = read(path)
    return resolve(doc, check(doc), known)


def resolve(doc: Document, config: Config, known: Known = NOTHING) -> Desired:
    """Apply defaults and allocate addresses: the containers keep ``known.addresses``
    (when still valid), those the file names no suite for keep ``known.suites``;
    ``host.apt.suite`` not given is ``known.host_release`` when fjord knows it."""
    suites = known.suites
    config, suite_from = _apt_suite(config, known.host_release)
    alloc = Allocator(config, known.addresses)
    try:
        given = alloc.allocate()
    except _Exhausted as exc:
        raise ConfigError([doc.problem(("containers", exc.name), exc.reason)],
                          doc.filename) from None
    containers = tuple(_container(config, name, config.containers[name], given[name],
                                  suites.get(name))
                       for name in sorted(config.containers))
    return Desired(config, containers, alloc.result(), doc.filename,
                   apt_suite_from=suite_from, host_release=known.host_release)


def _apt_suite(config: Config, release: HostRelease | None
               ) -> tuple[Config, HostRelease | None]:
    """The configuration with host.apt.suite set to the host's release when the file
    names none and the release is one fjord knows (else as it is)."""
    apt = config.host.apt
    if apt.suite is not None or release is None or release.codename is None:
        return config, None
    host = config.host.model_copy(update={
        "apt": apt.model_copy(update={"suite": release.codename})})
    return config.model_copy(update={"host": host}), release


def _container(config: Config, name: str, spec: ContainerSpec,
               given: Mapping[str, str], built: str | None = None) -> Container:
    d = config.defaults

    def pick(key: str, default: Any = None) -> Any:
        """The container's value, else the defaults' value, else the built-in default."""
        value = getattr(spec, key)
        if value is None:
            value = getattr(d, key)
        if value is None:
            value = BUILT_IN[key] if key in BUILT_IN else default
        return value

    domain = pick("domain", config.host.domain)
    named = spec.suite or d.suite
    has_v6 = config.host.ipv6 is not None
    return Container(
        name=name,
        fqdn=f"{name}.{domain}",
        ipv4=IPv4Address(given["ipv4"]),
        ipv6=IPv6Address(given["ipv6"]) if has_v6 else None,
        mac_private=given["mac_private"],
        mac_public=given["mac_public"] if has_v6 else None,
        # named in the file, else the suite it was built from: a built-in default that
        # moves on (bookworm, then trixie) is no reason to rebuild an existing container
        suite=named or built or BUILT_IN["suite"],
        suite_kept=None if named else built,
        packages=tuple(pick("packages")),
        memory=pick("memory"),
        vcpus=pick("vcpus"),
        cpu_shares=pick("cpu_shares"),
        ssh_keys=tuple(pick("ssh_keys")),
        puppet=pick("puppet"),
        # a container declared stopped does not start at boot either
        autostart=pick("autostart") and pick("state") == "running",
        rootfs=pick("rootfs"),
        locale=pick("locale"),
        state=pick("state"),
        privileged=pick("privileged"),
        privileged_explicit=(spec.privileged if spec.privileged is not None
                             else d.privileged) is True,
    )


class _Exhausted(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name, self.reason = name, reason


class Allocator:
    """Hands out addresses and MACs in three rounds, so that no container can take what
    another one holds:

    1. explicit values from the file, the host's own addresses, and what containers that
       were removed but not yet pruned still hold, are reserved;
    2. every container gets back what it was given before (``known``), if still valid;
    3. what is still missing is allocated: the lowest free IPv4 of the private network,
       the lowest free IPv6 from PREFIX:1::1, a MAC derived from host and container names.
    """

    def __init__(self, config: Config, known: Mapping[str, Mapping[str, str]]) -> None:
        self.config = config
        self.has_v6 = config.host.ipv6 is not None
        self.known = {n: _valid_entries(v) for n, v in known.items() if isinstance(v, Mapping)}
        self.assigned: dict[str, dict[str, str]] = {}
        self.taken: set[str] = set()

    def keys(self) -> tuple[str, ...]:
        if self.has_v6:
            return ("ipv4", "mac_private", "ipv6", "mac_public")
        return ("ipv4", "mac_private")

    def allocate(self) -> dict[str, dict[str, str]]:
        host = self.config.host
        names = sorted(self.config.containers)
        self.taken.add(str(host.private.address.ip))
        if host.ipv6 is not None:
            self.taken.update((str(host.ipv6.address.ip), str(host.ipv6.gateway)))
        for n, values in self.known.items():
            if n not in self.config.containers:
                self.taken.update(values.values())
        for name in names:
            for key, value in self._explicit(name).items():
                self._claim(name, key, value)
        for name in names:
            for key in self.keys():
                old = self.known.get(name, {}).get(key)
                if key not in self.assigned.get(name, {}) and old is not None \
                        and old not in self.taken and self._fits(key, old):
                    self._claim(name, key, old)
        fresh = _Fresh(self.config, self.taken)
        for name in names:
            mine = self.assigned.setdefault(name, {})
            for key in self.keys():
                if key not in mine:
                    try:
                        self._claim(name, key, fresh.next(key, name))
                    except _NoneLeft as exc:
                        raise _Exhausted(name, str(exc)) from None
        return self.assigned

    def _explicit(self, name: str) -> dict[str, str]:
        spec = self.config.containers[name]
        values = {"ipv4": spec.ipv4, "ipv6": spec.ipv6,
                  "mac_private": spec.mac.private, "mac_public": spec.mac.public}
        return {k: str(v) for k, v in values.items() if v is not None and k in self.keys()}

    def _claim(self, name: str, key: str, value: str) -> None:
        self.assigned.setdefault(name, {})[key] = value
        self.taken.add(value)

    def _fits(self, key: str, value: str) -> bool:
        """Whether a remembered value still fits this file's networks."""
        host = self.config.host
        if key == "ipv4":
            net4 = host.private.address.network
            addr4 = IPv4Address(value)
            return addr4 in net4 and addr4 not in (net4.network_address, net4.broadcast_address)
        if key == "ipv6":
            assert host.ipv6 is not None
            net6 = host.ipv6.address.network
            addr6 = IPv6Address(value)
            return addr6 in net6 and addr6 != net6.network_address
        return value.startswith(MAC_PREFIX)

    def result(self) -> dict[str, dict[str, str]]:
        """Allocations to persist: this config's plus those of containers not yet pruned."""
        out = {n: v for n, v in self.known.items() if n not in self.config.containers}
        out.update(self.assigned)
        return out


class _NoneLeft(Exception):
    pass


class _Fresh:
    """New values, lowest first. ``taken`` only grows while allocating, so each search
    resumes where the previous one stopped: n containers cost O(n), not O(n²)."""

    def __init__(self, config: Config, taken: set[str]) -> None:
        self.config, self.taken = config, taken
        net4 = config.host.private.address.network
        self.v4 = int(net4.network_address) + 1
        self.v4_end = int(net4.broadcast_address)
        if config.host.ipv6 is not None:
            net6 = config.host.ipv6.address.network
            base = int(net6.network_address) + (IPV6_CONTAINER_BASE if net6.prefixlen <= 64 else 0)
            self.v6 = base + 1
            self.v6_end = min(base + IPV6_SEARCH, int(net6.broadcast_address) + 1)

    def next(self, key: str, name: str) -> str:
        if key == "ipv4":
            while self.v4 < self.v4_end:
                text = str(IPv4Address(self.v4))
                self.v4 += 1
                if text not in self.taken:
                    return text
            net4 = self.config.host.private.address.network
            raise _NoneLeft(f"no free IPv4 address left in {net4}")
        if key == "ipv6":
            while self.v6 < self.v6_end:
                text = str(IPv6Address(self.v6))
                self.v6 += 1
                if text not in self.taken:
                    return text
            raise _NoneLeft("no free IPv6 address left for containers")
        return self._mac(name, key.removeprefix("mac_"))

    def _mac(self, name: str, iface: str) -> str:
        # Derived from the names, so that a container gets the same MAC on every run even
        # without remembered allocations; collisions move on to the next attempt.
        for attempt in range(1000):
            seed = f"{self.config.host.fqdn}/{name}/{iface}/{attempt}".encode()
            digest = hashlib.sha256(seed).digest()
            mac = MAC_PREFIX + ":".join(f"{b:02x}" for b in digest[:3])
            if mac not in self.taken:
                return mac
        raise _NoneLeft("no free MAC address")  # pragma: no cover


def _valid_entries(values: Mapping[str, Any]) -> dict[str, str]:
    """Remembered values in their canonical form; damaged ones are dropped (reallocated)."""
    out = {}
    for key, value in values.items():
        if not isinstance(value, str):
            continue
        try:
            if key == "ipv4":
                out[key] = str(IPv4Address(value))
            elif key == "ipv6":
                out[key] = str(IPv6Address(value))
            elif key in ("mac_private", "mac_public"):
                out[key] = check_mac(value)
        except ValueError:
            continue
    return out


def with_kept(desired: Desired) -> Desired:
    """The desired state as the network sees it: the file's containers, plus those fjord
    made that the file no longer names but that still exist (kept until `apply --prune`
    destroys them and frees their addresses). A kept container keeps its routes, proxy
    NDP entry, firewall rules and name, so it goes on working as it was."""
    declared = {c.name for c in desired.containers}
    kept = []
    for name, values in sorted(desired.allocations.items()):
        if name in declared or "ipv4" not in values:
            continue
        try:
            ipv4 = IPv4Address(values["ipv4"])
            ipv6 = IPv6Address(values["ipv6"]) if values.get("ipv6") else None
        except ValueError:
            continue
        if desired.host.ipv6 is None:
            ipv6 = None
        kept.append(Container(
            name=name, fqdn=f"{name}.{desired.host.domain}", ipv4=ipv4, ipv6=ipv6,
            mac_private=values.get("mac_private", ""), mac_public=values.get("mac_public"),
            suite=BUILT_IN["suite"], packages=(), memory=BUILT_IN["memory"], vcpus=1,
            cpu_shares=1024, ssh_keys=(), puppet=None, autostart=False, rootfs="overlay",
            locale="C.UTF-8"))
    if not kept:
        return desired
    return replace(desired, containers=(*desired.containers, *kept))
