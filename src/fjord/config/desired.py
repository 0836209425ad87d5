"""The desired state: a checked Config with defaults applied and addresses allocated.

Allocation is stable: a container keeps what it was given (remembered in
/var/lib/fjord/allocations.json, or read back from what exists), new containers
take the lowest free addresses, and MACs derive from the host and container names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from fjord.config.loader import Document, read
from fjord.config.models import Config, ContainerSpec, Host, Puppet
from fjord.config.problems import ConfigError, Problem
from fjord.config.validate import DEFAULT_MEMORY, check
from fjord.state import read_json, state_dir, write_json

ALLOCATIONS = "allocations.json"
# Containers' public IPv6 addresses start at PREFIX:1::1, as in the original setup.
IPV6_CONTAINER_BASE = 1 << 48


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


@dataclass(frozen=True)
class Desired:
    config: Config
    containers: tuple[Container, ...]
    allocations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    filename: str | None = None

    @property
    def host(self) -> Host:
        return self.config.host

    def container(self, name: str) -> Container:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(name)


def load(path: str, *, allocations: Mapping[str, Mapping[str, str]] | None = None) -> Desired:
    """Read, check and resolve a configuration file (raises ConfigError, exit 2)."""
    doc = read(path)
    return resolve(doc, check(doc), allocations)


def resolve(doc: Document, config: Config,
            allocations: Mapping[str, Mapping[str, str]] | None = None) -> Desired:
    known = read_allocations() if allocations is None else allocations
    alloc = Allocator(config, known)
    problems: list[Problem] = []
    containers = []
    for name in sorted(config.containers):
        spec = config.containers[name]
        try:
            containers.append(_container(config, name, spec, alloc))
        except _Exhausted as exc:
            problems.append(doc.problem(("containers", name), str(exc)))
    if problems:
        raise ConfigError(problems, doc.filename)
    return Desired(config, tuple(containers), alloc.result(), doc.filename)


def _container(config: Config, name: str, spec: ContainerSpec, alloc: Allocator) -> Container:
    d = config.defaults

    def pick(key: str, default: Any) -> Any:
        value = getattr(spec, key)
        if value is None:
            value = getattr(d, key)
        return default if value is None else value

    domain = pick("domain", config.host.domain)
    has_v6 = config.host.ipv6 is not None
    return Container(
        name=name,
        fqdn=f"{name}.{domain}",
        ipv4=alloc.ipv4(name, spec.ipv4),
        ipv6=alloc.ipv6(name, spec.ipv6) if has_v6 else None,
        mac_private=alloc.mac(name, "private", spec.mac.private),
        mac_public=alloc.mac(name, "public", spec.mac.public) if has_v6 else None,
        suite=pick("suite", config.host.apt.suite),
        packages=tuple(pick("packages", [])),
        memory=pick("memory", DEFAULT_MEMORY),
        vcpus=pick("vcpus", 1),
        cpu_shares=pick("cpu_shares", 1024),
        ssh_keys=tuple(pick("ssh_keys", [])),
        puppet=pick("puppet", None),
        autostart=pick("autostart", True),
        rootfs=pick("rootfs", "overlay"),
        locale=pick("locale", "C.UTF-8"),
    )


class _Exhausted(Exception):
    pass


class Allocator:
    """Hands out addresses and MACs: explicit ones first, then remembered ones, then new."""

    def __init__(self, config: Config, known: Mapping[str, Mapping[str, str]]) -> None:
        self.config = config
        self.known = {n: dict(v) for n, v in known.items() if isinstance(v, Mapping)}
        self.assigned: dict[str, dict[str, str]] = {}
        explicit = [(n, s) for n, s in config.containers.items()]
        self.taken: set[str] = {str(config.host.private.address.ip)}
        if config.host.ipv6 is not None:
            self.taken.add(str(config.host.ipv6.address.ip))
        for _, s in explicit:
            for value in (s.ipv4, s.ipv6, s.mac.private, s.mac.public):
                if value is not None:
                    self.taken.add(str(value))
        # What other (possibly removed, not yet pruned) containers hold stays theirs.
        for n, values in self.known.items():
            if n not in config.containers:
                self.taken.update(values.values())

    def _remember(self, name: str, key: str, value: str) -> str:
        self.assigned.setdefault(name, {})[key] = value
        self.taken.add(value)
        return value

    def _remembered(self, name: str, key: str, valid: Any) -> str | None:
        value = self.known.get(name, {}).get(key)
        if value is None or value in self.taken:
            return None
        try:
            return value if valid(value) else None
        except ValueError:
            return None

    def ipv4(self, name: str, explicit: IPv4Address | None) -> IPv4Address:
        if explicit is not None:
            return IPv4Address(self._remember(name, "ipv4", str(explicit)))
        net = self.config.host.private.address.network
        old = self._remembered(name, "ipv4", lambda v: IPv4Address(v) in net)
        if old is not None:
            return IPv4Address(self._remember(name, "ipv4", old))
        for addr in net.hosts():
            if str(addr) not in self.taken:
                return IPv4Address(self._remember(name, "ipv4", str(addr)))
        raise _Exhausted(f"no free IPv4 address left in {net}")

    def ipv6(self, name: str, explicit: IPv6Address | None) -> IPv6Address:
        if explicit is not None:
            return IPv6Address(self._remember(name, "ipv6", str(explicit)))
        assert self.config.host.ipv6 is not None
        net: IPv6Network = self.config.host.ipv6.address.network
        old = self._remembered(name, "ipv6", lambda v: IPv6Address(v) in net)
        if old is not None:
            return IPv6Address(self._remember(name, "ipv6", old))
        base = int(net.network_address) + (IPV6_CONTAINER_BASE if net.prefixlen <= 64 else 0)
        for i in range(1, 1 << 16):
            addr = IPv6Address(base + i)
            if addr in net and str(addr) not in self.taken:
                return IPv6Address(self._remember(name, "ipv6", str(addr)))
        raise _Exhausted(f"no free IPv6 address left in {net}")

    def mac(self, name: str, iface: str, explicit: str | None) -> str:
        key = f"mac_{iface}"
        if explicit is not None:
            return self._remember(name, key, explicit)
        old = self._remembered(name, key, lambda v: v.startswith("52:54:00:"))
        if old is not None:
            return self._remember(name, key, old)
        for attempt in range(1000):
            seed = f"{self.config.host.fqdn}/{name}/{iface}/{attempt}".encode()
            digest = hashlib.sha256(seed).digest()
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
            if mac not in self.taken:
                return self._remember(name, key, mac)
        raise _Exhausted("no free MAC address")  # pragma: no cover

    def result(self) -> dict[str, dict[str, str]]:
        """Allocations to persist: this config's plus those of containers not yet pruned."""
        out = {n: v for n, v in self.known.items() if n not in self.config.containers}
        out.update(self.assigned)
        return out


def allocations_path() -> Path:
    return state_dir() / ALLOCATIONS


def read_allocations() -> dict[str, dict[str, str]]:
    data = read_json(allocations_path()) or {}
    containers = data.get("containers", {})
    return containers if isinstance(containers, dict) else {}


def save_allocations(desired: Desired) -> bool:
    """Persist the allocations; True when the file changed."""
    if read_allocations() == desired.allocations:
        return False
    write_json(allocations_path(), {"version": 1, "containers": dict(desired.allocations)})
    return True


def forget(names: Iterable[str]) -> None:
    """Free the addresses of destroyed containers."""
    data = read_allocations()
    for name in names:
        data.pop(name, None)
    write_json(allocations_path(), {"version": 1, "containers": data})
