"""Value types: sizes, names, domain names, MACs, SSH keys, addresses."""

from __future__ import annotations

import base64

import pytest

from fjord.config import types
from fjord.config.types import (
    check_fqdn,
    check_mac,
    check_name,
    check_ssh_key,
    format_size,
    parse_size,
)

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df "
           "admin@example.net")


@pytest.mark.parametrize("text, size", [
    ("512MiB", 512 << 20), ("512M", 512 << 20), ("512m", 512 << 20), ("512 MB", 512 << 20),
    ("1G", 1 << 30), ("1gib", 1 << 30), ("1.5G", 3 << 29), ("0.5T", 1 << 39), ("4096K", 1 << 22),
    ("100", 100), ("100b", 100), (" 2 GiB ", 2 << 30), (536870912, 536870912),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value, message", [
    ("1.5.G", "is not a size"), ("12 parsecs", "is not a size"), ("G", "is not a size"),
    ("-1G", "is not a size"), ("1e9", "is not a size"), ("٥G", "is not a size"),  # Arabic 5
    ("0", "at least one byte"), (0, "at least one byte"), ("0.1b", "at least one byte"),
    (-5, "at least one byte"), ("9" * 20 + "T", "larger than any host"),
    ("1" * 400 + "G", "is not a size"), (10 ** 30, "larger than any host"),
    (True, "expected a size"), (1.5, "is not a size"), (None, "is not a size"),
])
def test_bad_sizes(value, message):
    with pytest.raises(ValueError, match=message):
        parse_size(value)


@pytest.mark.parametrize("size, text", [
    (512 << 20, "512MiB"), (1 << 30, "1GiB"), (3 << 29, "1536MiB"), (1 << 40, "1TiB"),
    (1000, "1000B"), (4 << 10, "4KiB"),
])
def test_format_size_round_trips(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize("name", ["web", "a", "0", "123", "a-b", "x" * 63, "web-01"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "(empty)"), ("x" * 64, "(64 characters long)"), ("Web", "(uppercase letters)"),
    ("web_1", "('_' is not allowed)"), ("../../etc", "('.' is not allowed)"),
    ("a/b", "('/' is not allowed)"), ("web;reboot", "(';' is not allowed)"),
    ("$(id)", "('$' is not allowed)"), ("<b>", "('<' is not allowed)"),
    ("a&b", "('&' is not allowed)"), ("web server", "(whitespace)"), ("web\t", "(whitespace)"),
    ("w\u0435b", "('\u0435' (U+0435) is not an ASCII letter)"),   # Cyrillic e
    ("ｗeb", "(U+FF57)"),                                          # fullwidth w
    ("we\u200bb", "(U+200B)"),                                     # zero-width space
    ("-web", "(starts or ends with a hyphen)"), ("web-", "(starts or ends with a hyphen)"),
])
def test_bad_names_say_why(name, why):
    with pytest.raises(ValueError) as exc:
        check_name(name)
    assert why in str(exc.value)
    assert "use 1 to 63 lowercase letters, digits and hyphens" in str(exc.value)


@pytest.mark.parametrize("value, message", [
    (5, "expected a name, got the number 5 (put it in quotes"),
    (False, "expected a name, got the boolean false"),
    ([1], "expected a name, got a list"), ({}, "expected a name, got a mapping"),
])
def test_names_must_be_text(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_name(value)


def test_long_bad_values_are_shortened_in_messages():
    with pytest.raises(ValueError) as exc:
        check_name("X" * 10_000)
    assert len(str(exc.value)) < 250


def test_fqdn():
    assert check_fqdn("oslo.example.net.") == "oslo.example.net"
    for bad in ("Oslo.example.net", "oslo..net", "oslo_1.example.net", "a" * 64 + ".net",
                ".".join(["a" * 63] * 4) + ".abc"):
        with pytest.raises(ValueError):
            check_fqdn(bad)


def test_mac():
    assert check_mac("52:54:00:AB:cd:EF") == "52:54:00:ab:cd:ef"
    assert check_mac("02:00:00:00:00:01") == "02:00:00:00:00:01"  # locally administered
    for bad in ("52-54-00-ab-cd-ef", "52:54:00:ab:cd", "52:54:00:ab:cd:eg", "5254.00ab.cdef"):
        with pytest.raises(ValueError, match="is not a MAC address"):
            check_mac(bad)
    for multicast in ("01:00:5e:00:00:01", "33:33:00:00:00:01", "ff:ff:ff:ff:ff:ff"):
        with pytest.raises(ValueError, match="multicast"):
            check_mac(multicast)


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


@pytest.mark.parametrize("key", [
    ED25519,
    ED25519.rsplit(" ", 1)[0],                                   # no comment
    "ssh-rsa " + _blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" * 257) + " a b c",
    "ecdsa-sha2-nistp256 " + _blob(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" * 65),
    "sk-ssh-ed25519@openssh.com " + _blob(b"sk-ssh-ed25519@openssh.com", b"k" * 32, b"ssh:"),
])
def test_good_ssh_keys(key):
    assert check_ssh_key("  " + key + "\n") == key


@pytest.mark.parametrize("key, message", [
    ("ssh-rsa foo", "base64 data is damaged"),
    ("ssh-rsa AAAA", "does not match its type ssh-rsa"),
    ("ssh-rsa " + ED25519.split()[1], "does not match its type ssh-rsa"),
    (ED25519[:60], "incomplete or damaged"),
    (ED25519.replace("AAAAI", "AAAAJ"), "incomplete or damaged"),
    ("my laptop", "is not an OpenSSH public key"),
    ("ssh-ed25519", "is not an OpenSSH public key"),
    (ED25519.replace(" admin", "\nadmin"), "is not an OpenSSH public key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----",
     "PRIVATE key"),
    ("ssh-dsa " + ED25519.split()[1], "is not an OpenSSH public key"),
])
def test_bad_ssh_keys(key, message):
    with pytest.raises(ValueError, match=message):
        check_ssh_key(key)


@pytest.mark.parametrize("fn, text", [
    (types._ipv6, "fe80::1%eth0"), (types._ipv6, "fe80::1%$(reboot)"),
    (types._ipv6_interface, "2001:db8::1%x/64"), (types._ip, "fe80::1%eth0"),
])
def test_ipv6_scope_ids_are_refused(fn, text):
    with pytest.raises(ValueError, match="a scope"):
        fn(text)


def test_addresses():
    assert str(types._ipv6("2001:DB8::1/64")) == "2001:db8::1"   # prefix dropped, canonical
    assert str(types._ip("192.0.2.1")) == "192.0.2.1"
    with pytest.raises(ValueError, match="needs a prefix length, like 192.0.2.5/24"):
        types._ipv4_interface("192.0.2.5")
    with pytest.raises(ValueError, match="needs a prefix length, like 2001:db8::2/64"):
        types._ipv6_interface("2001:db8::2")
    for bad in ("010.1.0.2", "10.1.0.256", "10.1.0", "١٠.1.0.2"):
        with pytest.raises(ValueError, match="is not an IPv4 address"):
            types._ipv4(bad)
    with pytest.raises(ValueError, match="is not an IPv4 address with prefix"):
        types._ipv4_interface("192.0.2.5/33")


@pytest.mark.parametrize("check, good", [
    (check_name, "web"), (check_fqdn, "oslo.example.net"), (check_mac, "52:54:00:00:00:01"),
    (types.check_package, "vim"), (types.check_suite, "bookworm"), (types.check_ifname, "eth0"),
    (check_ssh_key, ED25519), (parse_size, "1G"),
])
@pytest.mark.parametrize("suffix", ["\n", "\nx", "\x1b[2J", "\u2028"])
def test_no_value_smuggles_a_line_break_or_escape(check, good, suffix):
    # Python's `$` matches before a final newline: "web\n" used to be a valid name.
    if check is check_ssh_key and suffix.isspace():
        assert check(good + suffix) == good        # surrounding whitespace is trimmed
        return
    with pytest.raises(ValueError):
        check(good + suffix)
