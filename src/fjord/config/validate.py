"""From a parsed document to a checked Config: schema errors and semantic checks.

Every problem is collected (not just the first), each named by its key path, and
nothing here touches the host.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from pydantic import BaseModel, ValidationError

from fjord.config.loader import Document
from fjord.config.models import BUILT_IN, MAC_FILTERING_PROVIDERS, Config, PublicIPv6
from fjord.config.problems import ConfigError, Path, Problem, format_path
from fjord.config.types import format_size

DEFAULT_MEMORY: int = BUILT_IN["memory"]
# RFC 1918. (ipaddress's is_private also covers loopback, link-local and documentation
# ranges, none of which may be a NATed container network.)
PRIVATE_RANGES = tuple(
    IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


def check(doc: Document) -> Config:
    """Validate ``doc`` against the schema and the semantic rules; raise ConfigError."""
    try:
        config = Config.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(_schema_problems(doc, exc), doc.filename) from None
    problems = list(semantic_problems(config, doc))
    if problems:
        raise ConfigError(problems, doc.filename)
    return config


# --- schema errors -----------------------------------------------------------------------


def _inner_model(annotation: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        return (_inner_model(typing.get_args(annotation)[1]),)
    if origin in (list, typing.Union) or str(origin) == "<class 'types.UnionType'>":
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is typing.Annotated:
        return _inner_model(typing.get_args(annotation)[0])
    return None


def _schema_model(path: Path) -> type[BaseModel] | None:
    # containers.NAME.x -> ContainerSpec; resolve by walking with dict awareness
    model: Any = Config
    i = 0
    while i < len(path):
        part = path[i]
        fields = getattr(model, "model_fields", None)
        if isinstance(part, int):
            i += 1
            continue
        if fields is None or part not in fields:
            return None
        inner = _inner_model(fields[part].annotation)
        if isinstance(inner, tuple):
            model = inner[0]
            i += 2  # skip the mapping key
            continue
        model = inner
        i += 1
        if model is None:
            return None
    return model


# Suggestions for misspelt keys (difflib) for this many unknown keys; past that, the
# file is not a typo away from right, and a suggestion each would cost seconds.
SUGGESTED_KEYS = 200


def _schema_problems(doc: Document, exc: ValidationError) -> list[Problem]:
    problems = []
    unknown = 0
    for err in exc.errors(include_url=False):
        loc: list[str | int] = []
        for part in err["loc"]:
            if part == "[key]":
                continue
            if isinstance(part, str) and (*loc, part) not in doc.marks and (
                not part.islower() or "[" in part
            ):
                # pydantic names union members ('IPv4Address', 'function-after[…]'): not
                # keys of the file. (A missing key is not in the file either, but every
                # field name is lowercase.)
                continue
            loc.append(part)
        path = tuple(loc)
        kind = err["type"]
        unknown += kind == "extra_forbidden"
        message = _schema_message(path, kind, err, suggest=unknown <= SUGGESTED_KEYS)
        problems.append(doc.problem(path, message))
    # A misspelt key is reported once, as unknown with its suggestion, and not a second
    # time as the required key that is then missing.
    suggested = {(p.path[:-1], m) for p in problems
                 for m in re.findall(r"\(did you mean '([^']+)'\?\)", p.message)}
    return [p for p in problems if not (
        p.message.startswith("required key is missing") and (p.path[:-1], p.path[-1]) in suggested
    )]


_TYPE_WORDS = {
    "model_type": "a mapping (`key: value` lines)",
    "dict_type": "a mapping (`key: value` lines)",
    "model_attributes_type": "a mapping (`key: value` lines)",
    "list_type": "a list (`[a, b]`, or lines starting with `- `)",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
}


def _schema_message(path: Path, kind: str, err: Any, suggest: bool = True) -> str:
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        message = f"unknown key {_short(key)}"
        model = _schema_model(path[:-1])
        if model is not None and not suggest:
            message += f"; allowed: {', '.join(model.model_fields)}"
        elif model is not None:
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            else:
                message += f"; allowed: {', '.join(model.model_fields)}"
        return message
    if kind == "missing":
        model = _schema_model(path[:-1])
        info = model.model_fields.get(str(path[-1])) if model is not None and path else None
        what = info.description.rstrip(".") if info is not None and info.description else ""
        if what[:2].istitle():  # "The host's …" but not "IPv4 …"
            what = what[0].lower() + what[1:]
        return "required key is missing" + (f": {what}" if what else "")
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}; got {_short(value)}"
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        return f"{_short(value)} is not in the expected form (a match for {pattern})"
    if kind in _TYPE_WORDS:
        message = f"must be {_TYPE_WORDS[kind]}; got {_short(value)}"
        if kind == "int_type" and isinstance(value, str) and value.strip().isdigit():
            message += " (remove the quotes)"
        elif kind == "bool_type" and isinstance(value, str):
            message += " (YAML's yes/no/on/off are text here: write true or false)"
        return message
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx", {})
        if kind == "too_short":
            n = ctx.get("min_length", 1)
            return f"needs at least {n} item{'s' if n != 1 else ''}"
        n = ctx.get("max_length", 0)
        return f"has too many items (at most {n})"
    message = str(err["msg"]).replace("Input should be", "must be").replace(" should ", " must ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message += f"; got {_short(value)}"
    return message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- semantic checks ---------------------------------------------------------------------


def host_capacity(config: Config) -> tuple[int, int]:
    """Memory (bytes) and CPUs the host can give: declared, else this machine's."""
    memory = config.host.capacity.memory
    cpus = config.host.capacity.cpus
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            memory = 1 << 40
    if cpus is None:
        cpus = os.cpu_count() or 1
    return memory, cpus


def semantic_problems(config: Config, doc: Document) -> Iterator[Problem]:
    def p(path: Path, message: str) -> Problem:
        return doc.problem(path, message)

    host = config.host
    v4 = host.ipv4
    pub4 = v4.address.network
    if v4.address.ip in (pub4.network_address, pub4.broadcast_address) and pub4.prefixlen < 31:
        yield p(("host", "ipv4", "address"),
                f"{v4.address.ip} is the network or broadcast address of {pub4}")
    if v4.gateway == v4.address.ip:
        yield p(("host", "ipv4", "gateway"), f"{v4.gateway} is the host's own address")
    elif v4.gateway not in pub4 and not (v4.gateway_onlink or pub4.prefixlen == 32):
        yield p(("host", "ipv4", "gateway"),
                f"{v4.gateway} is not on-link: outside {pub4} (if the provider's gateway is "
                f"on the link anyway, as Hetzner Cloud's is, set host.ipv4.gateway_onlink: "
                f"true)")

    priv = host.private.address.network
    if priv.overlaps(pub4):
        yield p(("host", "private", "address"),
                f"the private network {priv} overlaps the public network {pub4}")
    elif v4.gateway in priv:
        # Hetzner Cloud's 172.31.1.1 is inside 172.16.0.0/12: br-int would take its route
        yield p(("host", "private", "address"),
                f"the private network {priv} holds the IPv4 gateway {v4.gateway}: the host "
                f"would route the gateway into the containers' network")
    if not any(priv.subnet_of(r) for r in PRIVATE_RANGES):
        yield p(("host", "private", "address"),
                f"{priv} is not a private range (use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16)")
    if priv.prefixlen > 30:
        yield p(("host", "private", "address"), f"{priv} is too small for containers")
    elif host.private.address.ip in (priv.network_address, priv.broadcast_address):
        yield p(("host", "private", "address"),
                f"{host.private.address.ip} is the network or broadcast address of {priv}")

    pub6: IPv6Network | None = None
    if host.ipv6 is not None:
        v6 = host.ipv6
        pub6 = v6.address.network
        if pub6.prefixlen > 64:
            yield p(("host", "ipv6", "address"),
                    f"{pub6} is smaller than a /64; containers need addresses from a /64")
        elif pub6.prefixlen < 64:
            # Addresses, routes and neighbour proxying are laid out, and tested, for a
            # /64; of a larger assignment the server's own /64 is what it is given.
            first64 = IPv6Network(f"{v6.address.ip}/64", strict=False)
            yield p(("host", "ipv6", "address"),
                    f"{pub6} is larger than a /64; fjord gives containers addresses from "
                    f"one /64: write {v6.address.ip}/64 (the /64 {first64} of it)")
        if v6.address.ip == pub6.network_address:
            yield p(("host", "ipv6", "address"),
                    f"{v6.address.ip} is the subnet-router anycast address of {pub6}")
        if not (v6.gateway.is_link_local or v6.gateway in pub6):
            yield p(("host", "ipv6", "gateway"),
                    f"{v6.gateway} is neither link-local nor inside {pub6}")
        elif v6.gateway == v6.address.ip:
            yield p(("host", "ipv6", "gateway"), f"{v6.gateway} is the host's own address")
        if v6.effective_mode == "bridged" and host.provider in MAC_FILTERING_PROVIDERS:
            yield p(("host", "ipv6", "mode"),
                    f"bridged IPv6 puts container MAC addresses on the uplink, and "
                    f"{host.provider} locks servers that show foreign MACs: use mode: routed")

    sw = host.switch
    if sw.external == sw.internal:
        yield p(("host", "switch", "internal"), "the two bridges need different names")
    for key, name in (("external", sw.external), ("internal", sw.internal)):
        if name == host.uplink:
            yield p(("host", "switch", key), f"{name} is the uplink's name")
    if sw.kind == "linux-bridge" and sw.datapath != "system":
        yield p(("host", "switch", "datapath"), "a datapath applies to Open vSwitch only")

    names = set(config.containers)
    seen_forwards: dict[tuple[str, int], int] = {}
    for i, fwd in enumerate(host.forwards):
        if fwd.container not in names:
            yield p(("host", "forwards", i, "container"),
                    f"no container named '{fwd.container}'")
        if fwd.protocol == "tcp" and fwd.port == host.ssh_port:
            yield p(("host", "forwards", i, "port"),
                    f"tcp/{fwd.port} is the host's own SSH port: forwarding it would lock you out")
        fkey = (fwd.protocol, fwd.port)
        if fkey in seen_forwards:
            yield p(("host", "forwards", i, "port"),
                    f"{fwd.protocol}/{fwd.port} is already forwarded "
                    f"(host.forwards[{seen_forwards[fkey]}])")
        else:
            seen_forwards[fkey] = i

    if host.firewall is not None:
        for proto in ("tcp", "udp"):
            first: dict[int, int] = {}
            for i, port in enumerate(getattr(host.firewall, proto)):
                if port in first:
                    yield p(("host", "firewall", proto, i),
                            f"{proto}/{port} is already listed "
                            f"(host.firewall.{proto}[{first[port]}])")
                else:
                    first[port] = i

    memory, cpus = host_capacity(config)
    owners: dict[tuple[str, object], list[Path]] = defaultdict(list)
    reserved4 = {host.private.address.ip}
    for name, spec in config.containers.items():
        base: Path = ("containers", name)
        if spec.ipv4 is not None:
            owners[("ipv4", spec.ipv4)].append((*base, "ipv4"))
            yield from _check_private(spec.ipv4, priv, reserved4, (*base, "ipv4"), p)
        if spec.ipv6 is not None:
            owners[("ipv6", spec.ipv6)].append((*base, "ipv6"))
            if host.ipv6 is None or pub6 is None:
                yield p((*base, "ipv6"), "the host has no IPv6 (host.ipv6 is not set)")
            else:
                yield from _check_public6(spec.ipv6, pub6, host.ipv6, (*base, "ipv6"), p)
        for iface in ("private", "public"):
            mac = getattr(spec.mac, iface)
            if mac is not None:
                owners[("mac", mac)].append((*base, "mac", iface))
        if spec.mac.public is not None and host.ipv6 is None:
            yield p((*base, "mac", "public"),
                    "the host has no IPv6 (host.ipv6 is not set), so containers have no "
                    "public interface")
        mem = spec.memory or config.defaults.memory or DEFAULT_MEMORY
        if mem > memory:
            where = (*base, "memory") if spec.memory else ("defaults", "memory")
            yield p(where, f"{format_size(mem)} is more than the host's memory "
                           f"({format_size(memory)})")
        vcpus = spec.vcpus or config.defaults.vcpus or 1
        if vcpus > cpus:
            where = (*base, "vcpus") if spec.vcpus else ("defaults", "vcpus")
            yield p(where, f"{vcpus} vCPUs is more than the host's {cpus} CPUs")
        domain = spec.domain or config.defaults.domain or host.domain
        if len(f"{name}.{domain}") > 253:
            yield p(base, "the container's FQDN is longer than 253 characters")
        if name == host.hostname and domain == host.domain:
            yield p(base, f"'{name}' has the host's own FQDN")
    for (kind, value), paths in owners.items():
        for path in paths[1:]:
            yield p(path, f"{kind} {value} is already used by {format_path(paths[0])}")


def _check_private(addr: IPv4Address, net: IPv4Network, reserved: set[IPv4Address],
                   path: Path, p: Any) -> Iterator[Problem]:
    if addr not in net:
        yield p(path, f"{addr} is outside the private network {net}")
    elif addr in (net.network_address, net.broadcast_address):
        yield p(path, f"{addr} is the network or broadcast address of {net}")
    elif addr in reserved:
        yield p(path, f"{addr} is the host's own address (the containers' gateway)")


def _check_public6(addr: IPv6Address, net: IPv6Network, v6: PublicIPv6, path: Path,
                   p: Any) -> Iterator[Problem]:
    if addr not in net:
        yield p(path, f"{addr} is outside the host's IPv6 prefix {net}")
    elif addr == net.network_address:
        yield p(path, f"{addr} is the subnet-router anycast address of {net}")
    elif addr == v6.address.ip:
        yield p(path, f"{addr} is the host's own address")
    elif addr == v6.gateway:
        yield p(path, f"{addr} is the IPv6 gateway (host.ipv6.gateway)")
