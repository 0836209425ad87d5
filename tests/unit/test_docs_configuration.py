"""docs/configuration.md is generated from the models and must be kept up to date."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fjord.config import models, reference
from fjord.config.desired import resolve
from fjord.config.loader import parse, read
from fjord.config.models import BUILT_IN, json_schema
from fjord.config.types import format_size
from fjord.config.validate import check

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_docs_configuration_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == reference.generate(), (
        "docs/configuration.md is out of date: run "
        "`.venv/bin/python -m fjord.config.reference > docs/configuration.md`")


def test_check_option(tmp_path, capsys):
    current = tmp_path / "current.md"
    current.write_text(reference.generate(), encoding="utf-8")
    assert reference.main(["--check", str(current)]) == 0
    stale = tmp_path / "stale.md"
    stale.write_text(reference.generate().replace("fe80::1", "fe80::2"), encoding="utf-8")
    assert reference.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert reference.main(["--check", str(tmp_path / "missing.md")]) == 1


def schema_paths(node: dict[str, Any], defs: dict[str, Any], prefix: str) -> set[str]:
    """Every key path of the JSON Schema, found independently of the generator."""
    if "$ref" in node:
        return schema_paths(defs[node["$ref"].rsplit("/", 1)[1]], defs, prefix)
    paths: set[str] = set()
    for alt in node.get("anyOf", []):
        paths |= schema_paths(alt, defs, prefix)
    if node.get("type") == "array":
        paths |= schema_paths(node.get("items", {}), defs, prefix + "[]")
    for spec in node.get("patternProperties", {}).values():
        paths |= schema_paths(spec, defs, prefix + ".NAME")
    for key, spec in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        paths |= schema_paths(spec, defs, path)
    return paths


def test_every_key_of_the_schema_is_documented():
    schema = json_schema()
    paths = schema_paths(schema, schema["$defs"], "")
    assert len(paths) > 80
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(p for p in paths if f"`{p}`" not in text)
    assert missing == []


def test_every_documented_key_has_type_default_and_description():
    text = reference.generate()
    sections = re.split(r"\n(?=#{2,3} `)", text.split("\n# Keys\n", 1)[1])[1:]
    assert len(sections) > 60
    for section in sections:
        heading, blank, meta, blank2, description, *_ = section.split("\n")
        assert meta.startswith("*") and " · " in meta, section
        assert re.search(r"\*\*required\*\*|default|optional", meta), section
        assert description.strip(), section


def test_annotated_example_is_examples_lab_yaml():
    annotated = parse(reference.ANNOTATED_EXAMPLE)
    assert annotated.data == read(str(ROOT / "examples" / "lab.yaml")).data
    check(annotated)


def yaml_block_after(heading: str) -> str:
    text = reference.generate()
    after = text.split(heading, 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_merge_example_does_what_the_text_says():
    host = ("host:\n  fqdn: h.example.net\n  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}\n"
            "  dns: [192.0.2.53]\n  capacity: {memory: 8GiB, cpus: 2}\n")
    doc = parse(host + yaml_block_after("## How `defaults` merge"))
    d = resolve(doc, check(doc))
    web, db = d.container("web"), d.container("db")
    assert (web.memory, web.packages) == (1 << 30, ("curl", "less"))
    assert (db.memory, db.packages) == (4 << 30, ("postgresql",))


def test_editor_modeline_is_yaml():
    block = yaml_block_after("## Editor support")
    assert yaml.safe_load(block) is None and "$schema=" in block


@pytest.mark.parametrize("key", sorted(BUILT_IN))
def test_built_in_defaults_agree_with_the_descriptions(key):
    info = models.ContainerSettings.model_fields[key]
    value = BUILT_IN[key]
    said = re.search(r"\(default: ([^)]+)\)", info.description or "")
    if value in (None, []):
        assert said is None, f"{key}: the description names a default, the built-in is none"
        return
    assert said, f"{key}: the description should name its built-in default"
    shown = format_size(value) if key == "memory" else str(value).lower()
    assert said.group(1).lower() == shown.lower()
