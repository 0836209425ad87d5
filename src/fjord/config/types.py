"""Value types of the configuration, each with the error message an operator understands."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_SSH_KEY = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
    r"@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n\x00]*)?$"
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as a string, got {type(value).__name__}")
    return value


def check_name(value: Any) -> str:
    value = _text(value, "a name")
    if not _LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1 to 63 lowercase letters, digits and "
            "hyphens, not starting or ending with a hyphen"
        )
    return value


def check_fqdn(value: Any) -> str:
    value = _text(value, "a domain name").rstrip(".")
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid domain name: dot-separated labels of lowercase letters, "
            "digits and hyphens, at most 253 characters"
        )
    return value


def check_ifname(value: Any) -> str:
    value = _text(value, "an interface name")
    if not _IFNAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid interface name: 1 to 15 letters, digits, '_', '.', '-'"
        )
    return value


def check_package(value: Any) -> str:
    value = _text(value, "a package name")
    if not _PACKAGE.match(value):
        raise ValueError(f"{value!r} is not a valid Debian package name")
    return value


def check_suite(value: Any) -> str:
    value = _text(value, "a suite")
    if not _SUITE.match(value):
        raise ValueError(f"{value!r} is not a valid Debian suite or codename")
    return value


def check_mac(value: Any) -> str:
    value = _text(value, "a MAC address").lower()
    if not _MAC.match(value):
        raise ValueError(f"{value!r} is not a MAC address (like 52:54:00:12:34:56)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value} is a multicast MAC address")
    return value


def check_ssh_key(value: Any) -> str:
    value = _text(value, "an SSH public key").strip()
    if not _SSH_KEY.match(value):
        raise ValueError(
            "not an OpenSSH public key (expected 'ssh-ed25519 AAAA… comment' on one line)"
        )
    return value


def parse_size(value: Any) -> int:
    """'512M', '1GiB', '2g' or a number of bytes, to bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 2G")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"{value!r} is not a size (such as 512MiB or 2G)")
    if size <= 0:
        raise ValueError("a size must be positive")
    if size > 1 << 50:
        raise ValueError(f"{value!r} is larger than any host")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _ipv4_interface(value: Any) -> IPv4Interface:
    text = _text(value, "an IPv4 address with prefix")
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, like {text}/24")
    try:
        return IPv4Interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address with prefix") from None


def _ipv6_interface(value: Any) -> IPv6Interface:
    text = _text(value, "an IPv6 address with prefix")
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, like {text}/64")
    try:
        return IPv6Interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv6 address with prefix") from None


def _ipv4(value: Any) -> IPv4Address:
    text = _text(value, "an IPv4 address")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _ipv6(value: Any) -> IPv6Address:
    """An IPv6 address; a /prefix is accepted and dropped (the host's prefix applies)."""
    text = _text(value, "an IPv6 address")
    try:
        return IPv6Interface(text).ip if "/" in text else IPv6Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv6 address") from None


def _ip(value: Any) -> IPv4Address | IPv6Address:
    text = _text(value, "an IP address")
    return _ipv6(text) if ":" in text else _ipv4(text)


IPV4_EXAMPLE = "192.0.2.10/24"

_str = PlainSerializer(str, return_type=str)

Name = Annotated[str, BeforeValidator(check_name), WithJsonSchema(
    {"type": "string", "pattern": _LABEL.pattern, "maxLength": 63})]
FQDN = Annotated[str, BeforeValidator(check_fqdn), WithJsonSchema(
    {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.?$"})]
IfName = Annotated[str, BeforeValidator(check_ifname), WithJsonSchema(
    {"type": "string", "pattern": _IFNAME.pattern})]
Package = Annotated[str, BeforeValidator(check_package), WithJsonSchema(
    {"type": "string", "pattern": _PACKAGE.pattern})]
Suite = Annotated[str, BeforeValidator(check_suite), WithJsonSchema(
    {"type": "string", "pattern": _SUITE.pattern})]
MAC = Annotated[str, BeforeValidator(check_mac), WithJsonSchema(
    {"type": "string", "pattern": r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"})]
SSHKey = Annotated[str, BeforeValidator(check_ssh_key), WithJsonSchema({"type": "string"})]
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str),
                 WithJsonSchema({"anyOf": [{"type": "string", "pattern": _SIZE.pattern},
                                           {"type": "integer", "minimum": 1}]})]
IPv4Net = Annotated[IPv4Interface, BeforeValidator(_ipv4_interface), _str, WithJsonSchema(
    {"type": "string", "format": "ipv4-interface", "examples": ["192.0.2.10/24"]})]
IPv6Net = Annotated[IPv6Interface, BeforeValidator(_ipv6_interface), _str, WithJsonSchema(
    {"type": "string", "format": "ipv6-interface", "examples": ["2001:db8::2/64"]})]
IPv4 = Annotated[IPv4Address, BeforeValidator(_ipv4), _str, WithJsonSchema(
    {"type": "string", "format": "ipv4"})]
IPv6 = Annotated[IPv6Address, BeforeValidator(_ipv6), _str, WithJsonSchema(
    {"type": "string", "format": "ipv6"})]
IP = Annotated[IPv4Address | IPv6Address, BeforeValidator(_ip), _str, WithJsonSchema(
    {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})]
Port = Annotated[int, AfterValidator(lambda p: _port(p)), WithJsonSchema(
    {"type": "integer", "minimum": 1, "maximum": 65535})]


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (1 to 65535)")
    return value
