"""The JSON Schema (`fjord schema`, for editors): a valid schema that agrees with fjord."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from fjord.cli import main
from fjord.config import models
from fjord.config.loader import read
from fjord.config.models import Config, json_schema

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = [ROOT / "examples" / "seed.yaml", ROOT / "examples" / "lab.yaml"]
GOOD = sorted((HERE / "configs" / "good").glob("*.yaml"))


def validator(schema: dict[str, Any]) -> Any:
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def data(path: Path) -> Any:
    # fjord's own loader: JSON-compatible data (text keys, YAML 1.2 scalars)
    return read(str(path)).data


@pytest.fixture(scope="module")
def cli_schema() -> dict[str, Any]:
    argv, sys.argv = sys.argv, ["fjord", "schema"]
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        from contextlib import redirect_stdout
        from io import StringIO

        out = StringIO()
        with redirect_stdout(out):
            try:
                main()
            except SystemExit as exc:
                assert not exc.code
    finally:
        sys.argv = argv
        logging.root.handlers[:], logging.root.level = handlers, level
    return json.loads(out.getvalue())


def test_fjord_schema_prints_a_valid_json_schema(cli_schema):
    assert cli_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator(cli_schema)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_fjord_schema_accepts_the_examples(cli_schema, path):
    assert list(validator(cli_schema).iter_errors(data(path))) == []


@pytest.mark.parametrize("where", [(), ("host",), ("host", "ipv4"), ("containers", "test")])
def test_fjord_schema_rejects_an_unknown_key(cli_schema, where):
    doc = data(EXAMPLES[1])
    node = doc
    for part in where:
        node = node[part]
    node["colour"] = "blue"
    errors = list(validator(cli_schema).iter_errors(doc))
    assert errors and "colour" in errors[0].message


@pytest.mark.parametrize("path", GOOD + EXAMPLES, ids=lambda p: p.stem)
def test_json_schema_accepts_every_good_file(path):
    assert list(validator(json_schema()).iter_errors(data(path))) == []


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["containers"].update({"Web": {}}), "Web"),
    (lambda d: d["host"].update({"ssh_port": 70000}), "70000"),
    (lambda d: d["host"]["ipv4"].update({"address": "192.0.2.5"}), "192.0.2.5"),
    (lambda d: d["defaults"].update({"memory": "1 parsec"}), "1 parsec"),
    (lambda d: d["host"].pop("dns"), "dns"),
    (lambda d: d.update({"version": 2}), "1 was expected"),
])
def test_json_schema_rejects_what_fjord_rejects(mutate, key):
    doc = data(EXAMPLES[1])
    mutate(doc)
    errors = list(validator(json_schema()).iter_errors(doc))
    assert errors and any(key in e.message for e in errors), [e.message for e in errors]


def test_json_schema_has_no_noise_titles_but_keeps_type_titles():
    schema = json_schema()
    host = schema["$defs"]["Host"]["properties"]
    assert "title" not in schema["$defs"]["Apt"]["properties"]["manage"]
    assert host["fqdn"]["title"] == "domain name"
    assert host["ssh_port"]["title"] == "port"
    assert schema["title"] == "fjord configuration"


def all_fields() -> list[tuple[str, Any]]:
    out = []
    for name in dir(models):
        model = getattr(models, name)
        if isinstance(model, type) and issubclass(model, models.Model) and model is not \
                models.Model:
            out += [(f"{model.__name__}.{key}", info) for key, info in
                    model.model_fields.items()]
    return out


@pytest.mark.parametrize("name, info", all_fields(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_key_is_described_and_its_examples_are_valid(name, info):
    annotation = info.rebuild_annotation()
    model = _model_of(annotation)
    # a section may be described by its model's docstring
    assert info.description or (model and model.__doc__), f"{name} needs a description"
    if info.examples:
        adapter = TypeAdapter(annotation, config={"strict": True})
        for example in info.examples:
            adapter.validate_python(example)
    if model is None:
        assert info.examples, f"{name} needs an example (docs/configuration.md)"


def _model_of(annotation: Any) -> type | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def test_config_round_trips_through_json():
    config = Config.model_validate(data(EXAMPLES[0]))
    again = Config.model_validate(json.loads(config.model_dump_json()), strict=False)
    assert again == config
