"""Value types of the configuration, each with the error message an operator understands."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from decimal import Decimal
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
# A sysctl key as sysctl.d writes it: dotted, lowercase words (an interface name with a
# dot would be ambiguous there, as it is for sysctl itself).
_SYSCTL_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_][a-z0-9_-]*)+$")
# A value: numbers or words separated by single spaces (tcp_rmem's three, say).
_SYSCTL_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]+( [A-Za-z0-9_.:+-]+)*$")
# What fjord sets itself (host/sysctl.py): declared in the file, it would fight fjord.
SYSCTL_MANAGED_PREFIXES = ("net.bridge.",)
SYSCTL_MANAGED = frozenset({"net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding",
                            "net.ipv4.conf.all.arp_ignore", "net.ipv6.conf.all.forwarding",
                            "net.ipv6.conf.all.proxy_ndp"})
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_SSH_KEY = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
    r"@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$"
)
_SIZE_PATTERN = r"^ *([0-9]{1,20}(?:\.[0-9]{1,20})?) *(?:([kKmMgGtT])[iI]?[bB]?|[bB])? *$"
_SIZE = re.compile(_SIZE_PATTERN)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        if isinstance(value, bool | int | float):
            shown = str(value).lower() if isinstance(value, bool) else str(value)[:30]
            raise ValueError(f"expected {what}, got the {_KINDS[type(value)]} {shown}"
                             " (put it in quotes if it is meant as text)")
        kind = ("a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list)
                else type(value).__name__)
        raise ValueError(f"expected {what}, got {kind}")
    return value


_KINDS = {bool: "boolean", int: "number", float: "number"}


def check_name(value: Any) -> str:
    value = _text(value, "a name")
    if not _LABEL.fullmatch(value):
        raise ValueError(
            f"{_short(value)} is not a valid name ({_label_fault(value)}): use 1 to 63 "
            "lowercase letters, digits and hyphens, not starting or ending with a hyphen"
        )
    return value


def _label_fault(label: str) -> str:
    """Why ``label`` is not a DNS label, in words (the first reason found)."""
    if not label:
        return "empty"
    if len(label) > 63:
        return f"{len(label)} characters long"
    for c in label:
        if c.isascii() and (c.islower() or c.isdigit() or c == "-"):
            continue
        if not c.isascii():
            return f"{c!r} (U+{ord(c):04X}) is not an ASCII letter"
        if c.isupper():
            return "uppercase letters"
        if c.isspace():
            return "whitespace"
        return f"{c!r} is not allowed"
    return "starts or ends with a hyphen"


def _short(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_fqdn(value: Any) -> str:
    value = _text(value, "a domain name").rstrip(".")
    if len(value) > 253:
        raise ValueError(f"{_short(value)} is longer than 253 characters")
    for label in value.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{_short(value)} is not a valid domain name (label {_short(label)}: "
                f"{_label_fault(label)}): use dot-separated labels of lowercase letters, "
                "digits and hyphens"
            )
    return value


def check_ifname(value: Any) -> str:
    value = _text(value, "an interface name")
    if not _IFNAME.fullmatch(value):
        raise ValueError(
            f"{_short(value)} is not a valid interface name: 1 to 15 letters, digits, '_', '.', '-'"
        )
    return value


def check_package(value: Any) -> str:
    value = _text(value, "a package name")
    if not _PACKAGE.fullmatch(value):
        raise ValueError(f"{_short(value)} is not a valid Debian package name")
    return value


def check_sysctl_key(value: Any) -> str:
    value = _text(value, "a sysctl key")
    if len(value) > 128 or not _SYSCTL_KEY.fullmatch(value):
        raise ValueError(f"{_short(value)} is not a sysctl key: dotted lowercase words "
                         "such as net.core.somaxconn")
    if value in SYSCTL_MANAGED or value.startswith(SYSCTL_MANAGED_PREFIXES):
        raise ValueError(f"{value} is set by fjord itself (forwarding, ARP, proxy NDP, "
                         "bridge netfilter): it cannot be declared here")
    return value


def check_sysctl_value(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = _text(value, "a sysctl value (a number, or words separated by spaces)")
    if len(value) > 200 or not _SYSCTL_VALUE.fullmatch(value):
        raise ValueError(f"{_short(value)} is not a sysctl value: numbers or words "
                         "separated by single spaces")
    return value


def check_suite(value: Any) -> str:
    value = _text(value, "a suite")
    if not _SUITE.fullmatch(value):
        raise ValueError(f"{_short(value)} is not a valid Debian suite or codename")
    return value


# The suites fjord builds containers from and runs as the host: the ones whose layout
# (image sources, guest customisation) it knows. bookworm and trixie are releases; sid
# (also called unstable) is the rolling suite, with no -security and -updates companions
# (host/apt.py ROLLING, containers/image.py _NO_SECURITY). `testing` is not among them:
# its -updates and -security companions come and go with the release cycle.
RELEASES = ("bookworm", "trixie", "sid", "unstable")


def check_release(value: Any) -> str:
    value = check_suite(value)
    if value not in RELEASES:
        raise ValueError(f"{_short(value)} is not a suite fjord supports: use "
                         + ", ".join(RELEASES[:-1]) + " or " + RELEASES[-1])
    return value


def check_mac(value: Any) -> str:
    value = _text(value, "a MAC address").lower()
    if not _MAC.fullmatch(value):
        raise ValueError(f"{_short(value)} is not a MAC address (like 52:54:00:12:34:56)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value} is a multicast MAC address")
    return value


def check_ssh_key(value: Any) -> str:
    value = _text(value, "an SSH public key").strip()
    if "PRIVATE KEY" in value:
        raise ValueError("this is a PRIVATE key: never put it here; use the .pub file's line")
    if not _SSH_KEY.fullmatch(value):
        raise ValueError(
            f"{_short(value, 40)} is not an OpenSSH public key (expected one line "
            "'ssh-ed25519 AAAA… comment', as in ~/.ssh/id_ed25519.pub)"
        )
    for c in value:
        # sshd splits authorized_keys on \n only, but a terminal showing the key (plan,
        # status) acts on C1 controls, and bidirectional or invisible characters make
        # the comment lie about whose key it is.
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            raise ValueError(f"the key contains the invisible or control character "
                             f"U+{ord(c):04X}: copy the .pub file's line again")
    kind, blob = value.split()[:2]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"the {kind} key's base64 data is damaged (copied incompletely?)"
        ) from None
    # The blob is a series of length-prefixed fields, the first one the key type again.
    fields = _ssh_fields(raw)
    if fields and fields[0] != kind.encode():
        raise ValueError(f"the key data does not match its type {kind} "
                         "(copied incompletely, or the type was edited?)")
    if fields is None or len(fields) < 2:
        raise ValueError(f"the {kind} key's data is incomplete or damaged "
                         "(copied incompletely?)")
    return value


def _ssh_fields(raw: bytes) -> list[bytes] | None:
    """The length-prefixed fields of an SSH key blob; None when they do not fit exactly."""
    fields, i = [], 0
    while i < len(raw):
        size = int.from_bytes(raw[i : i + 4], "big")
        if i + 4 + size > len(raw):
            return [raw[4 : 4 + size]] if i == 0 else None
        fields.append(raw[i + 4 : i + 4 + size])
        i += 4 + size
    return fields


def parse_size(value: Any) -> int:
    """'512M', '1GiB', '2g', '1.5G' or a number of bytes, to bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 2G")
    if isinstance(value, int):
        size = Decimal(value)
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        size = Decimal(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    else:
        raise ValueError(f"{_short(str(value))} is not a size (such as 512MiB or 2G)")
    if size < 1:
        raise ValueError("a size must be at least one byte")
    if size > MAX_SIZE:
        raise ValueError(f"{_short(str(value))} is larger than any host")
    return int(size)


MAX_SIZE = 1 << 50


def format_size(size: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _ipv4_interface(value: Any) -> IPv4Interface:
    text = _text(value, "an IPv4 address with prefix")
    if "/" not in text:
        raise ValueError(f"{_short(text)} needs a prefix length, like {text[:40]}/24")
    try:
        return IPv4Interface(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not an IPv4 address with prefix") from None


def _no_scope(text: str) -> str:
    # ipaddress accepts 'fe80::1%anything' (a scope id); it has no place here and would
    # carry arbitrary text into generated files.
    if "%" in text:
        raise ValueError(f"{_short(text)}: a scope (%…) is not allowed in an IPv6 address")
    return text


def _ipv6_interface(value: Any) -> IPv6Interface:
    text = _no_scope(_text(value, "an IPv6 address with prefix"))
    if "/" not in text:
        raise ValueError(f"{_short(text)} needs a prefix length, like {text[:40]}/64")
    try:
        return IPv6Interface(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not an IPv6 address with prefix") from None


def _ipv4(value: Any) -> IPv4Address:
    text = _text(value, "an IPv4 address")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not an IPv4 address") from None


def _ipv6(value: Any) -> IPv6Address:
    """An IPv6 address; a /prefix is accepted and dropped (the host's prefix applies)."""
    text = _no_scope(_text(value, "an IPv6 address"))
    try:
        return IPv6Interface(text).ip if "/" in text else IPv6Address(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not an IPv6 address") from None


def _ip(value: Any) -> IPv4Address | IPv6Address:
    text = _text(value, "an IP address")
    return _ipv6(text) if ":" in text else _ipv4(text)


IPV4_EXAMPLE = "192.0.2.10/24"

_str = PlainSerializer(str, return_type=str)

def _schema(title: str, **schema: Any) -> WithJsonSchema:
    """The JSON Schema of a value type; ``title`` names the type in docs/configuration.md."""
    return WithJsonSchema({"title": title, **schema})


_IPV6_WITH_PREFIX = r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$"

Name = Annotated[str, BeforeValidator(check_name),
                 _schema("name", type="string", pattern=_LABEL.pattern, maxLength=63)]
FQDN = Annotated[str, BeforeValidator(check_fqdn), _schema(
    "domain name", type="string", maxLength=254, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.?$")]
IfName = Annotated[str, BeforeValidator(check_ifname),
                   _schema("interface name", type="string", pattern=_IFNAME.pattern)]
Package = Annotated[str, BeforeValidator(check_package),
                    _schema("Debian package", type="string", pattern=_PACKAGE.pattern)]
SysctlKey = Annotated[str, BeforeValidator(check_sysctl_key),
                      _schema("sysctl key", type="string", pattern=_SYSCTL_KEY.pattern)]
SysctlValue = Annotated[str, BeforeValidator(check_sysctl_value), _schema(
    "sysctl value", anyOf=[{"type": "integer"},
                           {"type": "string", "pattern": _SYSCTL_VALUE.pattern}])]
Suite = Annotated[str, BeforeValidator(check_suite),
                  _schema("Debian suite", type="string", pattern=_SUITE.pattern)]
Release = Annotated[str, BeforeValidator(check_release),
                    _schema("supported Debian suite", type="string", enum=list(RELEASES))]
MAC = Annotated[str, BeforeValidator(check_mac), _schema(
    "MAC address", type="string", pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")]
SSHKey = Annotated[str, BeforeValidator(check_ssh_key), _schema(
    "SSH public key", type="string", pattern=r"^(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+/=]+")]
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str),
                 _schema("size", anyOf=[{"type": "string", "pattern": _SIZE_PATTERN},
                                        {"type": "integer", "minimum": 1, "maximum": MAX_SIZE}])]
IPv4Net = Annotated[IPv4Interface, BeforeValidator(_ipv4_interface), _str, _schema(
    "IPv4 address/prefix", type="string", pattern=r"^[0-9.]+/[0-9]{1,2}$")]
IPv6Net = Annotated[IPv6Interface, BeforeValidator(_ipv6_interface), _str, _schema(
    "IPv6 address/prefix", type="string", pattern=_IPV6_WITH_PREFIX)]
IPv4 = Annotated[IPv4Address, BeforeValidator(_ipv4), _str,
                 _schema("IPv4 address", type="string", format="ipv4")]
IPv6 = Annotated[IPv6Address, BeforeValidator(_ipv6), _str, _schema(
    "IPv6 address", type="string",
    anyOf=[{"format": "ipv6"}, {"pattern": _IPV6_WITH_PREFIX}])]
IP = Annotated[IPv4Address | IPv6Address, BeforeValidator(_ip), _str, _schema(
    "IP address", type="string", anyOf=[{"format": "ipv4"}, {"format": "ipv6"}])]
Port = Annotated[int, AfterValidator(lambda p: _port(p)),
                 _schema("port", type="integer", minimum=1, maximum=65535)]


ARMOUR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOUR_END = "-----END PGP PUBLIC KEY BLOCK-----"


def check_armoured_key(value: str) -> str:
    """An ASCII-armoured OpenPGP public key: the BEGIN and END lines, printable ASCII."""
    text = value.strip()
    if not text.startswith(ARMOUR_BEGIN) or not text.endswith(ARMOUR_END):
        raise ValueError("not an ASCII-armoured OpenPGP public key: paste the repository's "
                         f"key as text (`gpg --armor --export KEYID`), from {ARMOUR_BEGIN} "
                         f"to {ARMOUR_END}")
    bad = sorted({c for c in text if not (" " <= c <= "~" or c in "\n\r\t")})
    if bad:
        raise ValueError("an armoured key is printable ASCII; this one holds "
                         + ", ".join(f"U+{ord(c):04X}" for c in bad[:5]))
    return value


ArmouredKey = Annotated[str, AfterValidator(check_armoured_key), _schema(
    "ASCII-armoured OpenPGP public key", type="string",
    pattern=r"^\s*-----BEGIN PGP PUBLIC KEY BLOCK-----")]


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (1 to 65535)")
    return value
