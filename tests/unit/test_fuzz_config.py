"""Fuzzing the loader and the validator: whatever the file holds, `fjord validate` either
accepts it or exits 2 with one readable line per problem. No other exception, ever.

Strategies:
- arbitrary text, and text from YAML's own punctuation;
- configurations generated from the JSON Schema, with mutations: wrong types, strings
  from hostile alphabets (path separators, shell and XML metacharacters, control and
  invisible characters, look-alikes), huge integers, floats, deep nesting, unknown keys;
- valid hosts with generated containers, forwards and remembered allocations, where the
  allocation invariants are checked too.

The number of examples per test comes from FJORD_FUZZ_EXAMPLES (conftest.py; a third of
it for the schema-agreement check, whose unmutated configurations are the slowest to draw).
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, note, settings
from hypothesis import strategies as st

from fjord.config.desired import Desired, Known, resolve
from fjord.config.loader import Document, parse, read
from fjord.config.models import Config, json_schema
from fjord.config.problems import ConfigError
from fjord.config.validate import check

try:
    import jsonschema
except ImportError:  # pragma: no cover - a test dependency
    jsonschema = None

LAB = read(str(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")).data


def outcome(doc_or_text: Document | str) -> Desired | ConfigError:
    """Run the validate path; return the result or the ConfigError, raise anything else."""
    try:
        doc = parse(doc_or_text, "fuzz.yaml") if isinstance(doc_or_text, str) else doc_or_text
        return resolve(doc, check(doc))
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert exc.problems, "a ConfigError without problems"
        for problem in exc.problems:
            line = problem.render("fuzz.yaml")
            assert line.isprintable(), repr(line)     # one line, nothing for the terminal
            assert len(line) < 2000, line[:200]
        return exc


# --- (a) arbitrary text ------------------------------------------------------------------------

YAML_PUNCTUATION = " \t\n-:?,[]{}#&*!|>'\"%@`.~=<0123456789abcdefxyz\\\r\x85\u2028\ufeff"


@given(st.text(max_size=400))
def test_arbitrary_text(text):
    outcome(text)


@given(st.text(alphabet=YAML_PUNCTUATION, max_size=300))
def test_yaml_punctuation(text):
    outcome(text)


@given(st.lists(st.sampled_from([
    "host:", "  fqdn: a.b", "  ipv4:", "    address: 192.0.2.5/24", "    gateway: 192.0.2.1",
    "  dns: [192.0.2.53]", "containers:", "  web:", "    ipv4: 10.1.0.2", "  - x", "&a", "*a",
    "<<: *a", "? x", ": y", "!!binary", "---", "...", "%YAML 1.1", "  ", "\t", "#", "{", "}",
    "[", "]", "'", '"', "|", ">",
]), max_size=30).map("\n".join))
def test_yaml_shaped_lines(text):
    outcome(text)


# --- (b) generated from the schema, with mutations -------------------------------------------

HOSTILE_ALPHABET = (
    "aZ09-_./\\;$()`|&<>'\"!*?[]{}~#%^=+,:@ \t\n\r\x00\x07\x1b\x7f"
    "\u0435\u0430\uff57\u200b\u202e\ufeff\u2028é中🌊"
)
HUGE = st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**300, 10**4000, -1, 0, 65536])
SCALARS = st.one_of(
    st.text(alphabet=HOSTILE_ALPHABET, max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70), HUGE,
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
)
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


MUTATION = st.one_of(ANY_VALUE, st.integers(20, 80).map(deep))


def typed(title: str | None, node: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    """Plausible values for fjord's own value types (titles set in config/types.py)."""
    octet = st.integers(0, 255)
    ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
    ipv6 = st.ip_addresses(v=6).map(str)
    return {
        "name": st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
        "domain name": st.from_regex(r"[a-z]{1,8}\.example\.(net|org)", fullmatch=True),
        "IPv4 address": ipv4,
        "IPv6 address": ipv6,
        "IP address": st.one_of(ipv4, ipv6),
        "IPv4 address/prefix": st.tuples(ipv4, st.integers(0, 32).map(str)).map("/".join),
        "IPv6 address/prefix": st.tuples(ipv6, st.integers(0, 128).map(str)).map("/".join),
        "MAC address": st.binary(min_size=6, max_size=6).map(
            lambda b: ":".join(f"{x:02x}" for x in b)),
        "size": st.one_of(st.integers(1, 2**45), st.from_regex(
            r"[0-9]{1,4}(\.[0-9])? ?[KMGT]i?B?", fullmatch=True)),
        "SSH public key": st.sampled_from([
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df a",
            "ssh-rsa AAAA", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldK"]),
    }.get(title or "")


def from_schema(node: dict[str, Any], defs: dict[str, Any], hostile: bool = True) -> Any:
    """Values for the schema ``node``; with ``hostile``, some replaced by anything at all."""
    if "$ref" in node:
        return from_schema(defs[node["$ref"].rsplit("/", 1)[1]], defs, hostile)
    special = typed(node.get("title"), node)
    if special is not None:
        plain = special
    elif "anyOf" in node:
        plain = st.one_of([from_schema({**{k: v for k, v in node.items() if k != "anyOf"},
                                         **alt}, defs, hostile) for alt in node["anyOf"]])
    elif "const" in node:
        plain = st.just(node["const"])
    elif "enum" in node:
        plain = st.sampled_from(node["enum"])
    elif node.get("type") == "object":
        plain = objects(node, defs, hostile)
    elif node.get("type") == "array":
        plain = st.lists(from_schema(node.get("items", {}), defs, hostile),
                         min_size=node.get("minItems", 0), max_size=3)
    elif node.get("type") == "string":
        plain = (st.from_regex(node["pattern"], fullmatch=True) if "pattern" in node
                 else st.text(max_size=20))
    elif node.get("type") == "integer":
        plain = st.integers(node.get("minimum"), node.get("maximum"))
    elif node.get("type") == "boolean":
        plain = st.booleans()
    elif node.get("type") == "null":
        plain = st.none()
    else:
        plain = ANY_VALUE
    if not hostile:
        return plain
    # about one value in eight is replaced by something hostile
    return st.one_of(*[plain] * 7, MUTATION)


def objects(node: dict[str, Any], defs: dict[str, Any], hostile: bool) -> Any:
    if "patternProperties" in node:
        (spec,) = node["patternProperties"].values()
        keys = st.one_of(typed("name", {}), st.text(alphabet=HOSTILE_ALPHABET, max_size=10))
        if not hostile:
            keys = typed("name", {})
        return st.dictionaries(keys, from_schema(spec, defs, hostile), max_size=3)
    props = node.get("properties", {})
    required = set(node.get("required", []))
    strategy = st.fixed_dictionaries(
        {k: from_schema(v, defs, hostile) for k, v in props.items() if k in required},
        optional={k: from_schema(v, defs, hostile) for k, v in props.items()
                  if k not in required},
    )
    if not hostile:
        return strategy
    unknown = st.dictionaries(st.text(alphabet="abcdefghij_", min_size=1, max_size=6),
                              ANY_VALUE, max_size=1)
    return st.tuples(strategy, st.integers(0, 9), unknown).map(
        lambda t: {**t[2], **t[0]} if t[1] == 0 else t[0])


SCHEMA = json_schema()
GENERATED = from_schema(SCHEMA, SCHEMA["$defs"])
PLAUSIBLE = from_schema(SCHEMA, SCHEMA["$defs"], hostile=False)


def as_yaml(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@given(GENERATED)
def test_generated_configs(data):
    """Each generated configuration, as data (any Python value) and as a YAML file."""
    note(repr(data))
    outcome(Document(data))
    try:
        text = as_yaml(data)
    except (ValueError, yaml.YAMLError):
        return            # not every Python value has a YAML form (e.g. 4000-digit ints)
    outcome(text)


@settings(max_examples=max(settings.default.max_examples // 3, 10))
@given(PLAUSIBLE)
def test_plausible_configs_and_the_json_schema(data):
    """Configurations that follow the schema reach the semantic checks; and editors using
    `fjord schema` must not flag a file that fjord's models accept."""
    note(repr(data))
    outcome(Document(data))
    if jsonschema is None:
        return
    try:
        Config.model_validate(data)
    except ValueError:
        return
    checker = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in checker.iter_errors(data)]
    assert errors == []


# --- (c) valid hosts with generated containers ------------------------------------------------

PREFIX = "2001:db8:151:7307"
CONTAINER_NAMES = st.sampled_from(["a", "b", "web", "db", "mail", "x-1", "zz", "test"])


def mostly(good: st.SearchStrategy[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value (so that allocation runs), sometimes an edge case."""
    # (Hypothesis favours the ends of a range: the edge case sits in the middle.)
    return st.tuples(st.integers(0, 15), good, st.sampled_from(bad)).map(
        lambda t: t[2] if t[0] == 7 else t[1])


V4 = mostly(st.integers(2, 40).map(lambda i: f"10.1.0.{i}"),
            ["10.1.0.0", "10.1.0.1", "10.1.255.255", "10.2.0.1", "192.0.2.5"])
V6 = mostly(st.integers(1, 40).map(lambda i: f"{PREFIX}:1::{i:x}"),
            [f"{PREFIX}::", f"{PREFIX}::2", f"{PREFIX}:1::3/64", "2001:db8::1", "fe80::1"])
MACS = mostly(st.integers(1, 40).map(lambda i: f"52:54:00:00:00:{i:02x}"),
              ["01:00:5e:00:00:01", "52:54:00:AB:CD:EF", "52:54:00:ab:cd:ef"])


@st.composite
def container_specs(draw: Any, v6: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        spec["ipv4"] = draw(V4)
    if draw(st.integers(0, 2 if v6 else 20)) == 0:
        spec["ipv6"] = draw(V6)
    if draw(st.integers(0, 3)) == 0:
        ifaces = ["private", "public"] if v6 else ["private"]
        spec["mac"] = {k: draw(MACS) for k in draw(st.sets(st.sampled_from(ifaces)))}
    if draw(st.integers(0, 3)) == 0:
        spec["memory"] = draw(mostly(st.sampled_from(["256M", "1G", "0.5G"]), ["1T", 1]))
    return spec


@st.composite
def hosts_with_containers(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    data = copy.deepcopy(LAB)
    data["host"]["capacity"] = {"memory": "64G", "cpus": 8}
    v6 = draw(st.booleans())
    if not v6:
        del data["host"]["ipv6"]
    data["containers"] = draw(st.dictionaries(CONTAINER_NAMES, container_specs(v6), max_size=6))
    names = sorted(data["containers"]) or ["test"]
    data["host"]["forwards"] = draw(st.lists(st.fixed_dictionaries({
        "port": mostly(st.integers(1000, 1010), [22]),
        "container": mostly(st.sampled_from(names), ["nobody"]),
        "protocol": st.sampled_from(["tcp", "udp"]),
    }), max_size=2, unique_by=lambda f: (f["port"], f["protocol"])))
    remembered = draw(st.dictionaries(CONTAINER_NAMES, st.fixed_dictionaries({}, optional={
        "ipv4": V4, "ipv6": V6, "mac_private": MACS, "mac_public": MACS,
    }), max_size=4))
    return data, remembered


@given(hosts_with_containers())
def test_allocation_invariants(case):
    data, remembered = case
    note(repr(case))
    doc = Document(data)
    try:
        config = check(doc)
    except ConfigError:
        return
    try:
        result = resolve(doc, config, Known(remembered))
    except ConfigError as exc:   # only possible reason: a network ran out of addresses
        assert all("no free" in p.message for p in exc.problems)
        return
    net4 = config.host.private.address.network
    values: list[str] = []
    for c in result.containers:
        spec = config.containers[c.name]
        assert c.ipv4 in net4 and c.ipv4 != config.host.private.address.ip
        assert c.ipv4 not in (net4.network_address, net4.broadcast_address)
        if spec.ipv4 is not None:
            assert c.ipv4 == spec.ipv4
        if config.host.ipv6 is not None:
            assert c.ipv6 is not None and c.ipv6 in config.host.ipv6.address.network
            assert c.ipv6 not in (config.host.ipv6.address.ip, config.host.ipv6.gateway)
            if spec.ipv6 is not None:
                assert c.ipv6 == spec.ipv6
        values += [str(c.ipv4), str(c.ipv6), c.mac_private, str(c.mac_public)]
    values = [v for v in values if v != "None"]
    assert len(values) == len(set(values)), "an address or MAC given twice"
    # the same input gives the same answer, and the answer is stable when fed back
    again = resolve(doc, config, Known(result.allocations))
    assert again.containers == result.containers
    # addresses of containers no longer in the file stay reserved
    for name, kept in result.allocations.items():
        if name not in config.containers:
            assert kept == {k: str(ipaddress.ip_address(v)) if "ip" in k else v
                            for k, v in kept.items()}
