"""YAML to data: positions of keys, duplicate keys, tags, limits, file errors."""

from __future__ import annotations

import time

import pytest

from fjord.config import loader
from fjord.config.loader import parse, read
from fjord.config.problems import ConfigError, Problem

NESTED = """\
version: 1
host:
  fqdn: oslo.example.net
  ipv4:
    address: 192.0.2.5/27
    gateway:   192.0.2.1
  dns:
    - 192.0.2.53
    -   2001:db8::53
  forwards:
    - {port: 80, container: web}
containers:
  web:
    mac: {private: 52:54:00:00:00:01}
"""


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as exc:
        parse(text, "f.yaml")
    return exc.value.problems


def only(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- positions -------------------------------------------------------------------------


@pytest.mark.parametrize("path, where", [
    (("version",), (1, 1)),
    (("host",), (2, 1)),
    (("host", "fqdn"), (3, 3)),
    (("host", "ipv4", "address"), (5, 5)),
    (("host", "ipv4", "gateway"), (6, 5)),       # the key, not the value after the spaces
    (("host", "dns", 0), (8, 7)),                 # list items: the item itself
    (("host", "dns", 1), (9, 9)),
    (("host", "forwards", 0, "container"), (11, 18)),
    (("containers", "web", "mac", "private"), (14, 11)),
])
def test_positions_of_nested_keys(path, where):
    assert parse(NESTED).position(path) == where


def test_position_of_an_absent_key_is_its_nearest_ancestor():
    doc = parse(NESTED)
    assert doc.position(("host", "ipv6", "address")) == (2, 1)
    assert doc.position(("containers", "web", "ipv4")) == (13, 3)
    assert doc.problem(("host", "ssh_port"), "x") == Problem(("host", "ssh_port"), "x", 2, 1)


def test_data_keeps_yaml_types():
    data = parse(NESTED).data
    assert data["version"] == 1
    assert data["host"]["dns"] == ["192.0.2.53", "2001:db8::53"]
    assert data["host"]["forwards"] == [{"port": 80, "container": "web"}]


# --- duplicate keys, tags, YAML 1.1 surprises --------------------------------------------


def test_duplicate_key_is_refused_with_both_lines():
    p = only("host:\n  fqdn: a\n  dns: []\n  fqdn: b\n")
    assert p.path == ("host", "fqdn")
    assert (p.line, p.column) == (4, 3)
    assert p.message == "duplicate key 'fqdn' (first on line 2)"


def test_duplicate_keys_are_all_reported():
    found = problems("a: 1\na: 2\nb: {x: 1, x: 2}\n")
    assert [p.path for p in found] == [("a",), ("b", "x")]


def test_duplicate_flow_key_in_a_list_item():
    assert only("l:\n  - {port: 1, port: 2}\n").path == ("l", 0, "port")


def test_merge_key_is_refused():
    p = only("base: &b {memory: 1G}\nweb:\n  <<: *b\n")
    assert p.path == ("web",) and "merge keys" in p.message


def test_complex_key_is_refused():
    assert only("? [a, b]\n: 1\n").message == "a key must be a plain string"


@pytest.mark.parametrize("text, tag", [
    ("a: !!binary aGk=\n", "!!binary"),
    ("a: !!set {x}\n", "!!set"),
    ("a: !!omap [b: 1]\n", "!!omap"),
    ("a: !!str [1]\n", "!!str"),
    ("a: !custom x\n", "!custom"),
    ("a: !!python/object/apply:os.system [id]\n", "!!python/object/apply:os.system"),
])
def test_unsupported_tags_are_refused(text, tag):
    p = only(text)
    assert p.path == ("a",)
    assert p.message == f"the YAML tag '{tag}' is not supported; write plain values"


@pytest.mark.parametrize("text, message", [
    ("a: !!int x\n", "cannot read 'x': not a valid integer"),
    ("a: !!float x\n", "cannot read 'x': not a valid number"),
    ("a: " + "9" * 5000 + "\n", "too many digits"),
])
def test_unreadable_scalars_are_problems_not_tracebacks(text, message):
    assert message in only(text).message


@pytest.mark.parametrize("text, value", [
    ("a: 52:54:00:00:00:10\n", "52:54:00:00:00:10"),  # YAML 1.1: a base-60 integer
    ("a: 1:30\n", "1:30"),
    ("a: 190:20:30.15\n", "190:20:30.15"),
    ("a: no\n", "no"),
    ("a: On\n", "On"),
    ("a: !!bool maybe\n", "maybe"),  # left to the schema: "must be true or false"
    ("a: true\n", True),
    ("a: False\n", False),
    ("a: 0x1f\n", 31),
    ("a: 1_000\n", 1000),
    ("a: 2001-01-01\n", "2001-01-01"),
    ("a: =\n", "="),
    ("a: ~\n", None),
    ("a: '123'\n", "123"),
])
def test_scalars_read_as_yaml_1_2_would(text, value):
    assert parse(text).data["a"] == value


def test_keys_are_always_text():
    assert parse("1: a\nyes: b\nnull: c\n").data == {"1": "a", "yes": "b", "null": "c"}


# --- shape and limits ----------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("just text\n", "the top level must be a mapping"),
])
def test_top_level_must_be_a_mapping(text, message):
    p = only(text)
    assert p.path == () and message in p.message


def test_syntax_error_has_line_and_column():
    p = only("host:\n  fqdn: [a\n  dns: b\n")
    assert p.message.startswith("YAML syntax error: ")
    assert p.line == 3 and p.column is not None


def test_tab_indentation_is_a_syntax_error_with_position():
    p = only("host:\n\tfqdn: a\n")
    assert p.message.startswith("YAML syntax error") and p.line == 2


def test_nul_byte_is_refused_with_its_position():
    p = only("a: 1\nb: x\x00y\n")
    assert (p.message, p.line, p.column) == ("file contains a NUL byte", 2, 5)


def test_control_character_is_refused_with_its_position():
    p = only("a: 1\nb: x\x1by\n")
    assert (p.message, p.line, p.column) == ("character U+001B is not allowed in YAML", 2, 5)


def test_size_limit():
    text = "a: '" + "x" * loader.MAX_BYTES + "'\n"
    assert "larger than" in only(text).message


def test_depth_limit():
    deep = "a: " + "[" * (loader.MAX_DEPTH + 1) + "]" * (loader.MAX_DEPTH + 1) + "\n"
    assert "nested deeper than" in only(deep).message
    ok = "a: " + "[" * (loader.MAX_DEPTH - 2) + "]" * (loader.MAX_DEPTH - 2) + "\n"
    assert parse(ok).data


def test_recursive_alias_is_bounded():
    assert "nested deeper" in only("a: &x [1, *x]\n").message


def test_billion_laughs_stops_quickly():
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*l{i - 1}"] * 10)
        lines.append(f"l{i}: &l{i} [{refs}]")
    start = time.perf_counter()
    p = only("\n".join(lines) + "\n")
    assert "alias bomb" in p.message and p.line is not None
    assert time.perf_counter() - start < 1.0


def test_a_few_aliases_are_fine():
    doc = parse("keys: &k [a, b]\nweb: {ssh_keys: *k}\ndb: {ssh_keys: *k}\n")
    assert doc.data["db"]["ssh_keys"] == ["a", "b"]


def test_node_limit(monkeypatch):
    monkeypatch.setattr(loader, "MAX_NODES", 50)
    assert "more than 50 values" in only("a: [" + ", ".join(["1"] * 60) + "]\n").message


# --- files ---------------------------------------------------------------------------------


def test_read_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        read(str(tmp_path / "nope.yaml"))
    assert "no such file" in str(exc.value)
    assert exc.value.exit_code == 2


def test_read_directory(tmp_path):
    with pytest.raises(ConfigError) as exc:
        read(str(tmp_path))
    assert "cannot read" in str(exc.value)


def test_read_not_utf8(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("host: {fqdn: osl\xf8}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        read(str(f))
    assert "not UTF-8 text" in str(exc.value)


def test_read_remembers_the_filename(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: [\n")
    with pytest.raises(ConfigError) as exc:
        read(str(f))
    assert exc.value.filename == str(f)
    assert f"({f}, line 2" in str(exc.value)
