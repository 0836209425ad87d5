"""Hostile configurations: every one refused with exit 2, one readable line per problem,
before anything is read from or written to the host.

The corpus is generated, not hand-picked: each hostile value (shell metacharacters, XML
and YAML injection, path traversal, very long strings, look-alike and invisible unicode,
control characters, NUL, huge and odd numbers) at each place of examples/lab.yaml that
holds a value or names something, plus whole-file attacks (duplicated keys, alias bombs,
tags, size, depth, encodings). The lab test (tests/lab/test_reliability_inputs.py) runs
the same corpus through `fjord apply` on a simulated server and compares the server
before and after.

Set FJORD_FUZZ_EXAMPLES higher for more random combinations (see conftest.py).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from faults import record
from told import tell

from fjord.config.loader import read

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lab.yaml"
BASE = read(str(EXAMPLE)).data
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df "
       "admin@example.net")

# --- hostile values --------------------------------------------------------------------------

HOSTILE: dict[str, Any] = {
    # shell
    "shell-subst": "$(reboot)",
    "shell-backtick": "`id>/tmp/pwned`",
    "shell-semicolon": "web; rm -rf /",
    "shell-pipe": "a|b",
    "shell-and": "a&&b",
    "shell-ifs": "a${IFS}b",
    "shell-glob": "*",
    "shell-tilde": "~root",
    "shell-dash": "-rf",
    "option-injection": "--config=/etc/shadow",
    # XML / libvirt
    "xml-close": "</name><devices><emulator>/bin/sh</emulator></devices><name>",
    "xml-entity": "&xxe;",
    "xml-doctype": '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/shadow">]>',
    "xml-quote": "a\" onload=\"x",
    # YAML / line-based files (newlines carry a second line into a generated file)
    "newline-key": "web\nhost: evil",
    "newline-iface": "eth0\n    post-up /bin/sh",
    "newline-nft": "br-ex\n}\ntable inet evil {",
    "crlf": "web\r\nx",
    "yaml-doc": "---\n...",
    "yaml-flow": "{a: b}",
    "yaml-anchor": "&a *a",
    # paths
    "traversal": "../../etc/passwd",
    "traversal-dots": "..",
    "traversal-dot": ".",
    "absolute": "/etc/shadow",
    "traversal-mid": "a/../../../root/.ssh",
    "backslash": "..\\..\\windows",
    "percent": "%2e%2e%2fetc",
    # size
    "long-10k": "a" * 10_000,
    "long-label": "a" * 64,
    "long-fqdn": ".".join(["a" * 63] * 5),
    "long-ifname": "b" * 16,
    "empty": "",
    "space": " ",
    # unicode
    "cyrillic-a": "t\u0435st",            # е, Cyrillic
    "fullwidth": "\uff57\uff45\uff42",     # ｗｅｂ
    "zero-width": "te\u200bst",
    "rtl-override": "test\u202egpj.exe",
    "bom": "\ufefftest",
    "nbsp": "test\u00a0",
    "combining": "te\u0301st",
    "line-separator": "web\u2028x",
    "nel": "web\x85x",
    "emoji": "\U0001f30a",
    # control characters (a YAML file may carry them in double-quoted strings)
    "escape": "te\x1b[2Jst",
    "bell": "te\x07st",
    "delete": "te\x7fst",
    "nul": "te\x00st",
    "tab": "te\tst",
    # numbers and other types
    "huge-int": 2**64,
    "huge-int-2": 10**100,
    "negative": -1,
    "zero": 0,
    "float": 1.5,
    "infinity": float("inf"),
    "nan": float("nan"),
    "bool": True,
    "null": None,
    "list": ["a", "b"],
    "mapping": {"a": "b"},
    "nested": [[[[[[[[[["x"]]]]]]]]]],
}

# Places in examples/lab.yaml, and a few the example leaves out, as key paths.
EXTRA: dict[tuple[Any, ...], Any] = {
    ("defaults", "ssh_keys"): [KEY],
    ("defaults", "packages"): ["curl"],
    ("defaults", "locale"): "en_US.UTF-8",
    ("defaults", "rootfs"): "overlay",
    ("defaults", "cpu_shares"): 512,
    ("containers", "test", "mac"): {"private": "52:54:00:12:34:56"},
    ("host", "ssh_port"): 22,
    ("host", "apt"): {"mirror": "http://deb.debian.org/debian", "suite": "bookworm",
                      "components": ["main"], "extra_suites": ["testing"],
                      "pins": [{"packages": ["lxc"], "release": "testing", "priority": 600}],
                      "repositories": [{"name": "puppet", "uris": ["http://apt.example.org"],
                                        "suites": ["bookworm"], "components": ["puppet8"],
                                        "key": "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n"
                                               "-----END PGP PUBLIC KEY BLOCK-----"}]},
    ("host", "capacity"): {"memory": "64GiB", "cpus": 8},
}


def base() -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for path, value in EXTRA.items():
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)
    return data


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every scalar's key path (list items by index)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, (*path, i))
    else:
        yield path


# Places where text is free by design: a comment after an SSH key, the apt key's body.
# Hostile text there is data, written to a file as given, never run: these are checked
# for what must still be refused (a second line, control characters), below.
FREE_TEXT = {("host", "apt", "repositories", 0, "key")}

# Values that are legitimately accepted at a place (the place takes any text or number
# of that kind): (place, hostile name).
ACCEPTED: set[tuple[tuple[Any, ...], str]] = set()


@dataclass(frozen=True)
class Case:
    name: str
    text: str | bytes
    place: tuple[Any, ...] | None = None   # where the hostile value went (None: file-level)
    value: Any = None                      # the value put there
    base: Any = None                       # the valid value it replaced

    def __str__(self) -> str:
        return self.name


# What may never get through validation, by the kind of place. Anything else a place
# accepts is, by construction, the kind of value it is meant to hold (the hostile string
# happened to be a valid name, such as 'oslo.example.net-rf', or a number in range).
URLS = {("host", "apt", "mirror"), ("host", "apt", "repositories", 0, "uris", 0)}
COMMENTS = {("defaults", "ssh_keys", 0)}          # a key's comment: any printable text
EXTRA_CHARS = {
    ("host", "apt", "pins", 0, "packages", 0): "*",          # every package
    ("host", "apt", "repositories", 0, "suites", 0): "/",    # a flat repository's path
    ("host", "capacity", "memory"): " ",                     # sizes: "512 MiB"
    ("defaults", "memory"): " ",
}
URL_FORBIDDEN = set(' `|<>{}\\^"')               # not allowed in a URL (RFC 3986)
NAME_CHARS = set(".-+_@")


def as_loaded(case: Case) -> Case:
    """The case with the value as fjord's loader read it from the file (YAML folds some
    line breaks, such as U+0085, into spaces)."""
    from fjord.config.loader import parse

    if case.place is None or case.place[-1] == "<name>" or isinstance(case.text, bytes):
        return case
    try:
        value = get(parse(case.text).data, case.place)
    except (KeyError, IndexError, TypeError):
        return case
    return Case(case.name, case.text, case.place, value, case.base)


def dangerous(case: Case) -> str | None:
    """Why the value of ``case`` must not be accepted (None: harmless if accepted)."""
    import unicodedata

    value, place = case.value, case.place
    if place is None:
        return "a file-level attack"
    if not isinstance(value, str):
        if isinstance(value, float) or isinstance(value, list | dict):
            return f"a {type(value).__name__} where {case.base!r} stood"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
            return "a huge number"
        return None
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            return f"control or invisible character U+{ord(ch):04X}"
    if place in COMMENTS:
        return None
    for ch in value:
        if not ch.isascii():
            return f"non-ASCII {ch!r}"
        if place in URLS:
            if ch in URL_FORBIDDEN or ch.isspace():
                return f"{ch!r} in a URL"
        elif not ch.isalnum() and ch not in NAME_CHARS | set(str(case.base)) \
                | set(EXTRA_CHARS.get(place, "")):
            return f"{ch!r} in a name"
    return None


def get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def put(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def rename(data: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    """Replace the key at ``path`` (its value kept) with ``new``."""
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[new] = node.pop(path[-1])
    return out


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1 << 20)


def value_cases() -> list[Case]:
    data = base()
    cases = []
    seen = {dump(data)}
    places = [p for p in leaves(data) if p not in FREE_TEXT]
    for place in places:
        where = ".".join(map(str, place))
        good = get(data, place)
        for name, value in HOSTILE.items():
            variants = [(f"{where}={name}", value)]
            if isinstance(good, str) and isinstance(value, str):
                # a valid value with the payload after it: what an injection looks like
                variants.append((f"{where}+={name}", good + value))
            for label, bad in variants:
                if (place, label.partition("=")[0][len(where):] + name) in ACCEPTED:
                    continue
                try:
                    text = dump(put(data, place, bad))
                except (ValueError, yaml.YAMLError):
                    continue
                if text not in seen:
                    seen.add(text)
                    cases.append(Case(label, text, place, bad, good))
    # names: containers and the container a forward points at
    for name, value in HOSTILE.items():
        if not isinstance(value, str) or value == "test":
            continue
        renamed = rename(data, ("containers", "test"), value)
        renamed["host"]["forwards"][0]["container"] = value
        cases.append(Case(f"containers.<name>={name}", dump(renamed),
                          ("containers", "<name>"), value, "test"))
    return cases


# --- whole-file attacks ------------------------------------------------------------------------

EXAMPLE_TEXT = EXAMPLE.read_text()


def bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + f"\nhost: *a{levels - 1}\n"


def file_cases() -> list[Case]:
    t = EXAMPLE_TEXT
    cases = [
        ("duplicate-top-key", t + "\nhost: {fqdn: evil.example.net}\n"),
        ("duplicate-container", t + "\n  test:\n    ipv4: 10.1.0.9\n"),
        ("duplicate-nested-key", t.replace("    gateway: 192.0.2.1\n",
                                           "    gateway: 192.0.2.1\n    gateway: 192.0.2.2\n")),
        ("billion-laughs", bomb(9, 9)),
        ("alias-bomb-mappings", "a: &a {x: 1, y: 1}\n" + "".join(
            f"b{i}: &b{i} {{p: *{'a' if i == 0 else f'b{i - 1}'}, "
            f"q: *{'a' if i == 0 else f'b{i - 1}'}}}\n" for i in range(25)) + "host: *b24\n"),
        ("alias-recursive", "a: &a [*a]\nhost: *a\n"),
        ("alias-undefined", t + "\nextra: *nothing\n"),
        ("merge-key", t.replace("  test:\n", "  base: &b {memory: 1G}\n  test:\n    <<: *b\n")),
        ("python-object", "!!python/object/apply:os.system ['touch /tmp/fjord-pwned']\n"),
        ("python-object-value", t.replace("fqdn: oslo.example.net",
                                          "fqdn: !!python/object/apply:os.getcwd []")),
        ("python-name", t.replace("provider: generic", "provider: !!python/name:os.system")),
        ("binary-tag", t.replace("fqdn: oslo.example.net", "fqdn: !!binary b3Nsbw==")),
        ("custom-tag", t.replace("fqdn: oslo.example.net", "fqdn: !evil oslo.example.net")),
        ("set-tag", t.replace("dns:", "dns: !!set\n   ? x\n  x:")),
        ("timestamp", t.replace("  memory: 512MiB\n", "  suite: 2001-12-14t21:59:43.10-05:00\n")),
        ("huge-int-digits", t.replace("vcpus: 1", "vcpus: " + "9" * 5000)),
        ("huge-float", t.replace("vcpus: 1", "vcpus: 1e999")),
        ("hex-int", t.replace("vcpus: 1", "vcpus: 0x10")),
        ("octal-yaml11", t.replace("vcpus: 1", "vcpus: 010")),
        ("sexagesimal", t.replace("port: 2222", "port: 1:00:00")),
        ("nul-byte", t.replace("oslo.example.net", "oslo\x00.example.net")),
        ("nul-escape", t.replace("fqdn: oslo.example.net", 'fqdn: "oslo\\0.example.net"')),
        ("escape-in-quotes", t.replace("fqdn: oslo.example.net", 'fqdn: "oslo\\e[2J"')),
        ("control-raw", t.replace("oslo.example.net", "oslo\x1b.example.net")),
        ("deep-nesting", "host: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("deep-mapping", "host: " + "{a: " * 2000 + "x" + "}" * 2000 + "\n"),
        ("too-large", t + "#" + "x" * (1 << 20) + "\n"),
        ("many-keys", "host:\n" + "".join(f"  k{i}: {i}\n" for i in range(2_000))),
        ("many-containers", t.replace("10.1.0.1/16", "10.1.0.1/22") + "".join(
            f"  c{i}:\n" for i in range(1_100))),
        ("long-line", "host: " + "a" * 500_000 + "\n"),
        ("two-documents", t + "\n---\n" + t),
        ("empty-file", ""),
        ("only-document-marker", "---\n"),
        ("top-level-list", "- " + t.replace("\n", "\n  ")),
        ("top-level-string", "'$(reboot)'\n"),
        ("bad-indent", t.replace("  fqdn:", " fqdn:")),
        ("tab-indent", t.replace("  fqdn:", "\tfqdn:")),
        ("unclosed-quote", t.replace("fqdn: oslo.example.net", 'fqdn: "oslo.example.net')),
        ("unclosed-flow", t.replace("packages: [emacs-nox, dbus]", "packages: [emacs-nox")),
        ("complex-key", t + "\n? [a, b]\n: c\n"),
        ("null-key", t + "\n~: x\n"),
        ("int-key", t.replace("  test:\n", "  12:\n").replace("container: test",
                                                              "container: 12")),
        ("version-2", t.replace("version: 1", "version: 2")),
    ]
    out = [Case(name, text) for name, text in cases]
    out += [
        Case("latin-1", EXAMPLE_TEXT.replace("oslo", "\xf8slo").encode("latin-1")),
        Case("utf-16", EXAMPLE_TEXT.encode("utf-16")),
        Case("utf-8-bom-then-nul", b"\xef\xbb\xbf" + EXAMPLE_TEXT.encode() + b"\x00"),
        Case("invalid-utf-8", EXAMPLE_TEXT.encode() + b"\n# \xff\xfe\xc3\x28\n"),
        Case("surrogate", EXAMPLE_TEXT.encode() + b"\n# \xed\xa0\x80\n"),
        Case("binary-garbage", bytes(range(256)) * 8),
    ]
    return out


VALUE_CASES = value_cases()
FILE_CASES = file_cases()
ALL_CASES = VALUE_CASES + FILE_CASES


def write_corpus(directory: Path, cases: list[Case] | None = None) -> list[Path]:
    """The corpus as files (for the lab test and for people)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, case in enumerate(cases if cases is not None else ALL_CASES):
        path = directory / f"{i:05d}.yaml"
        data = case.text if isinstance(case.text, bytes) else case.text.encode(
            "utf-8", errors="surrogatepass")
        path.write_bytes(data)
        paths.append(path)
    return paths


# --- running fjord in process ------------------------------------------------------------------


def fjord_in_process(*args: str) -> tuple[int, str, str]:
    """`fjord ARGS` through fjord.cli.main, as the console script runs it."""
    from fjord.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, logging.getLogger().handlers[:], logging.getLogger().level
    sys.argv = ["fjord", *args]
    code: int = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved[0]
        logging.getLogger().handlers[:] = saved[1]
        logging.getLogger().setLevel(saved[2])
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, out: str, err: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}, expected 2\nstdout: {out[:500]}\nstderr: {err[:2000]}"
    assert "Traceback" not in err, f"{what}: {err[:3000]}"
    lines = err.rstrip("\n").splitlines()
    assert lines and lines[-1].endswith("problem(s); nothing was changed."), (what, err[:2000])
    for line in lines:
        assert line.isprintable(), f"{what}: unprintable problem line {line[:300]!r}"
        assert len(line) < 2000, f"{what}: problem line of {len(line)} characters"


class HostTouched(AssertionError):
    pass


def _forbidden(*args: Any, **kwargs: Any) -> Any:
    raise HostTouched(f"fjord tried to reach the host: {args[:1]!r}")


@pytest.fixture(autouse=True)
def no_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """These tests run fjord in this process, on this machine: it must not be able to
    change it, whatever a test gets wrong. No external program, no socket (netlink,
    OVSDB, libvirt), not root (so `apply` stops at its root check even for a file it
    would accept), and a throwaway state directory."""
    import socket

    monkeypatch.setattr(subprocess, "Popen", _forbidden)
    monkeypatch.setattr(socket, "socket", _forbidden)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "fjord-state"))
    tell(monkeypatch, FJORD_PACKAGE_MANAGER="simulate")


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    seconds: float


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory
              ) -> list[tuple[Case, Path, Outcome]]:
    """Every case of the corpus through `fjord validate` (in process), once."""
    import socket

    directory = tmp_path_factory.mktemp("hostile")
    guard = pytest.MonkeyPatch()
    guard.setattr(subprocess, "Popen", _forbidden)
    guard.setattr(socket, "socket", _forbidden)
    guard.setattr(os, "geteuid", lambda: 65534)
    tell(guard, FJORD_STATE_DIR=str(directory / "fjord-state"))
    out = []
    try:
        for case, path in zip(ALL_CASES, write_corpus(directory), strict=True):
            start = time.monotonic()
            code, stdout, stderr = fjord_in_process("validate", "-c", str(path))
            out.append((case, path, Outcome(code, stdout, stderr, time.monotonic() - start)))
    finally:
        guard.undo()
    return out


def test_the_corpus_is_large_and_each_case_differs_from_the_example(tmp_path: Path) -> None:
    assert len(VALUE_CASES) > 2000, len(VALUE_CASES)
    assert len({c.text for c in ALL_CASES}) == len(ALL_CASES), "duplicate cases"
    assert all(c.text != EXAMPLE_TEXT for c in ALL_CASES)
    # the unmodified base is valid: each case fails because of its hostile value
    (path,) = write_corpus(tmp_path, [Case("base", dump(base()))])
    code, out, err = fjord_in_process("validate", "-c", str(path))
    assert code == 0, err


def test_every_hostile_configuration_is_refused_by_validate(
        validated: list[tuple[Case, Path, Outcome]], record_property: Any) -> None:
    """Refused with exit 2 and readable lines; or, when the place accepts the value, the
    value is one the place is meant to hold (no control or invisible character, nothing
    a name or a URL may not contain)."""
    failures, accepted = [], []
    for case, _, o in validated:
        if o.code == 0 and case.place is not None:
            case = as_loaded(case)
            why = dangerous(case)
            if why is not None:
                failures.append(f"{case.name}: accepted ({why}): {case.value!r:.120}")
            else:
                accepted.append(case.name)
            continue
        try:
            assert_refused(o.code, o.out, o.err, case.name)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    slow = [f"{c.name}: {o.seconds:.1f} s" for c, _, o in validated if o.seconds > 5]
    refused = len(validated) - len(accepted) - len(failures)
    record_property("hostile_configurations", len(validated))
    record_property("harmless_accepted", len(accepted))
    record("inputs.hostile_configurations", len(validated))
    record("inputs.refused", refused)
    record("inputs.accepted_harmless", len(accepted))
    print(f"{len(validated)} hostile configurations: {refused} refused, {len(accepted)} "
          f"accepted as harmless values of their place, {len(failures)} wrongly accepted")
    assert not failures, f"{len(failures)} wrongly accepted:\n" + "\n".join(failures[:80])
    assert not slow, f"slow to refuse: {slow}"


# `fjord plan`, `apply`, `status` and `check` load the file the same way; they refuse it
# before they read the host (plan, status, check) or check for root, take the apply lock
# or ask (apply). Every file-level attack and a sample of the rest go through all four.
# (Only cases validate refused: a valid file would make `check` ping from this machine.)


def test_plan_apply_status_check_refuse_them_before_touching_anything(
        validated: list[tuple[Case, Path, Outcome]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "fjord-state"
    refused = [(c, p) for c, p, o in validated if o.code == 2]
    sample = [(c, p) for c, p in refused if c.place is None]
    sample += [(c, p) for c, p in refused if c.place is not None][:: max(1, len(refused) // 150)]
    failures = []
    for case, path in sample:
        for args in (["plan", "-c", str(path)], ["apply", "-c", str(path), "--yes"],
                     ["status", "-c", str(path)], ["check", "-c", str(path)]):
            code, out, err = fjord_in_process(*args)
            try:
                assert_refused(code, out, err, f"{args[0]} {case.name}")
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0])
    record("inputs.plan_apply_status_check_refusals", 4 * len(sample))
    assert not state.exists(), "a refused configuration wrote fjord's state"
    assert not failures, "\n".join(failures[:80])


def test_the_real_command_line_refuses_them_too(
        validated: list[tuple[Case, Path, Outcome]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A few through the console script (its own process, environment and streams):
    `validate` only, which reads nothing but the file."""
    monkeypatch.undo()  # this test starts processes itself
    tell(monkeypatch, FJORD_STATE_DIR="/nonexistent/fjord-state")
    refused = [(c, p) for c, p, o in validated if o.code == 2]
    picked = [p for c, p in refused if c.name in ("billion-laughs", "nul-byte", "too-large",
                                                    "python-object")]
    picked += [p for _, p in refused][:: max(1, len(refused) // 10)]
    for path in picked:
        out = subprocess.run([sys.executable, "-m", "fjord", "validate", "-c", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert_refused(out.returncode, out.stdout, out.stderr, str(path))


# --- free text: data, never more than one line ---------------------------------------------


@pytest.mark.parametrize("comment", ["$(reboot)", "`id`", "a; b", "</x>", "../../etc"])
def test_an_ssh_key_comment_is_data(comment: str, tmp_path: Path) -> None:
    """A key's comment may hold any printable text (it is written as given, never run)."""
    path = tmp_path / "c.yaml"
    path.write_text(dump(put(base(), ("defaults", "ssh_keys"), [f"{KEY} {comment}"])))
    code, out, err = fjord_in_process("validate", "-c", str(path))
    assert code == 0, err


@pytest.mark.parametrize("extra", ["\nssh-ed25519 AAAAC3Nza evil", "\rx", "\x1b[2J",
                                   "\u2028ssh-rsa AAAA", "\u202eevil", "\x9b2J", "\x00"])
def test_an_ssh_key_carries_no_second_line_or_control_character(extra: str,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(dump(put(base(), ("defaults", "ssh_keys"), [KEY + extra])),
                    errors="surrogatepass")
    assert_refused(*fjord_in_process("validate", "-c", str(path)), repr(extra))


# --- more, at random: two hostile values at once -------------------------------------------

PLACES = [p for p in leaves(base()) if p not in FREE_TEXT]


@given(st.lists(st.tuples(st.sampled_from(PLACES), st.sampled_from(sorted(HOSTILE)),
                          st.booleans()), min_size=1, max_size=3))
def test_random_places_and_values(picks: list[tuple[tuple[Any, ...], str, bool]]) -> None:
    """Up to three hostile values at once, put in place or appended to the valid value:
    refused with readable lines, or each one harmless where it stands."""
    from fjord.config.loader import parse
    from fjord.config.problems import ConfigError
    from fjord.config.validate import check

    data, cases = base(), []
    for place, name, append in picks:
        good = get(data, place)
        value = HOSTILE[name]
        if append and isinstance(good, str) and isinstance(value, str):
            value = good + value
        data = put(data, place, value)
        cases.append(Case(name, "", place, value, good))
    note(repr(picks))
    try:
        text = dump(data)
    except (ValueError, yaml.YAMLError):
        return
    try:
        check(parse(text, "fuzz.yaml"))
    except ConfigError as exc:
        for problem in exc.problems:
            line = problem.render("fuzz.yaml")
            assert line.isprintable() and len(line) < 2000, line[:300]
        return
    loaded = parse(text, "fuzz.yaml").data
    for case in cases:
        case = Case(case.name, case.text, case.place, get(loaded, case.place), case.base)
        assert dangerous(case) is None, (case.place, case.value, dangerous(case))


def test_the_guard_holds(tmp_path: Path) -> None:
    """With a file fjord accepts, in-process `apply` stops at the root check and `plan`
    reaches for the host and is stopped: nothing in this module can change the machine."""
    (path,) = write_corpus(tmp_path, [Case("base", dump(base()))])
    code, _, err = fjord_in_process("apply", "-c", str(path), "--yes")
    assert code == 1 and "needs root" in err, err
    with pytest.raises(HostTouched):
        from fjord.cli import cli

        cli.main(["plan", "-c", str(path)], standalone_mode=False)
