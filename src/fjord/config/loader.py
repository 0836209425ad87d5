"""YAML to plain data, remembering where every key stands.

PyYAML composes a node tree (with marks); we walk it ourselves so that duplicate
keys are refused, alias bombs are bounded, and every key path maps to a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from fjord.config.problems import ConfigError, Path, Problem

try:  # the C loader is several times faster; fall back when libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 1 << 20
MAX_NODES = 200_000
MAX_DEPTH = 64


@dataclass
class Document:
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    filename: str | None = None

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """Line and column of ``path`` or of its nearest ancestor present in the file."""
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (None, None))

    def problem(self, path: Path, message: str) -> Problem:
        line, column = self.position(path)
        return Problem(tuple(path), message, line, column)


class _Walker:
    def __init__(self, loader: Any, filename: str | None) -> None:
        self.loader = loader
        self.filename = filename
        self.nodes = 0
        self.marks: dict[Path, tuple[int, int]] = {}
        self.problems: list[Problem] = []

    def _mark(self, path: Path, node: yaml.Node) -> None:
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))

    def _fail(self, path: Path, node: yaml.Node, message: str) -> None:
        self.problems.append(
            Problem(path, message, node.start_mark.line + 1, node.start_mark.column + 1)
        )

    def walk(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES} values (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
        self._mark(path, node)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self._fail(path, key_node, "YAML merge keys (<<) are not supported")
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self._fail(path, key_node, "a key must be a plain string")
                    continue
                key = key_node.value
                child = (*path, key)
                if key in out:
                    self._fail(child, key_node, f"duplicate key '{key}'")
                    continue
                self._mark(child, key_node)
                out[key] = self.walk(value_node, child, depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._fail(path, node, f"cannot read value: {exc}")
            return None
        if not isinstance(value, str | int | float | bool | type(None)):
            # timestamps, binary: keep the text, the schema will judge it
            return node.value
        return value


class _TooBig(Exception):
    pass


def parse(text: str, filename: str | None = None) -> Document:
    """Parse YAML text into a Document; raise ConfigError (exit 2) on any problem."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ConfigError([Problem((), f"file larger than {MAX_BYTES} bytes")], filename)
    if "\x00" in text:
        raise ConfigError([Problem((), "file contains a NUL byte")], filename)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            column = mark.column + 1 if mark else None
            reason = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(
                [Problem((), f"YAML syntax error: {reason}", line, column)], filename
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError([Problem((), f"YAML error: {exc}")], filename) from None
        except RecursionError:
            raise ConfigError([Problem((), "YAML nested too deeply")], filename) from None
        if root is None:
            raise ConfigError([Problem((), "the file is empty")], filename)
        walker = _Walker(loader, filename)
        try:
            data = walker.walk(root, ())
        except _TooBig as exc:
            raise ConfigError([Problem((), str(exc))], filename) from None
        except RecursionError:
            raise ConfigError([Problem((), "YAML nested too deeply")], filename) from None
        if walker.problems:
            raise ConfigError(walker.problems, filename)
        if not isinstance(data, dict):
            raise ConfigError(
                [Problem((), "the top level must be a mapping (host:, containers:, …)", 1, 1)],
                filename,
            )
        return Document(data, walker.marks, filename)
    finally:
        loader.dispose()


def read(path: str) -> Document:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem((), f"no such file: {path}")], path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem((), f"not UTF-8 text: {exc.reason}")], path) from None
    except OSError as exc:
        raise ConfigError([Problem((), f"cannot read: {exc.strerror}")], path) from None
    return parse(text, path)
