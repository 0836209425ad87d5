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
# Values reached again through aliases (*name). Legitimate files barely use aliases;
# a "billion laughs" file expands to billions of values from a few hundred bytes.
MAX_ALIASED = 10_000
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
        self.aliased = 0
        self.seen: set[int] = set()
        self.marks: dict[Path, tuple[int, int]] = {}
        self.problems: list[Problem] = []

    def _mark(self, path: Path, node: yaml.Node) -> None:
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))

    def _fail(self, path: Path, node: yaml.Node, message: str) -> None:
        self.problems.append(
            Problem(path, message, node.start_mark.line + 1, node.start_mark.column + 1)
        )

    def walk(self, node: yaml.Node, path: Path, depth: int = 0, aliased: bool = False) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES} values", node)
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels", node)
        if not aliased and id(node) in self.seen:
            aliased = True
        self.seen.add(id(node))
        if aliased:
            self.aliased += 1
            if self.aliased > MAX_ALIASED:
                raise _TooBig(f"aliases (*name) expand to more than {MAX_ALIASED} values "
                              "(an alias bomb?)", node)
        self._mark(path, node)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self._fail(path, node, _unsupported_tag(node.tag))
                return None
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    self._fail(path, key_node, "YAML merge keys (<<) are not supported; "
                               "write the keys out (use `defaults:` for shared container settings)")
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self._fail(path, key_node, "a key must be a plain string")
                    continue
                key = key_node.value
                child = (*path, key)
                if key in out:
                    line = self.marks[child][0]
                    self._fail(child, key_node, f"duplicate key '{key}' (first on line {line})")
                    continue
                self._mark(child, key_node)
                out[key] = self.walk(value_node, child, depth + 1, aliased)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._fail(path, node, _unsupported_tag(node.tag))
                return None
            return [self.walk(item, (*path, i), depth + 1, aliased)
                    for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        if node.tag in _AS_TEXT:
            # dates, `=`, `<<` as a value: keep the text, the schema will judge it
            return node.value
        if _yaml11_only(node):
            return node.value
        if node.tag not in _CONSTRUCTED:
            self._fail(path, node, _unsupported_tag(node.tag))
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            reason = exc.problem or "invalid value"
        except (ValueError, TypeError, ArithmeticError, AttributeError):
            # PyYAML's constructors raise plain exceptions for e.g. `!!int x`, `!!float x`
            # or an integer of more than 4300 digits.
            kind = node.tag.rpartition(":")[2]
            reason = ("too many digits" if len(node.value) > 4000
                      else f"not a valid {_KIND_NAMES.get(kind, kind)}")
        self._fail(path, node, f"cannot read {_short(node.value)}: {reason}")
        return None


_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
_CONSTRUCTED = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null"))
_KIND_NAMES = {"int": "integer", "float": "number", "bool": "boolean (true or false)"}
_AS_TEXT = frozenset(_TAG + t for t in ("timestamp", "value", "merge"))


def _yaml11_only(node: yaml.ScalarNode) -> bool:
    """Plain scalars that only YAML 1.1 turns into numbers or booleans: read as text, as
    YAML 1.2 (and JSON Schema tooling) does. Otherwise an unquoted MAC address such as
    52:54:00:00:00:10 becomes a base-60 integer, and a container named `no` becomes false.
    """
    if node.tag == _TAG + "bool":
        return node.value.lower() not in ("true", "false")
    if node.tag in (_TAG + "int", _TAG + "float"):
        return ":" in node.value
    return False


def _unsupported_tag(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return f"the YAML tag {_short(shown)} is not supported; write plain values"


def _short(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _TooBig(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1


def parse(text: str, filename: str | None = None) -> Document:
    """Parse YAML text into a Document; raise ConfigError (exit 2) on any problem."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ConfigError([Problem((), f"file larger than {MAX_BYTES} bytes")], filename)
    if "\x00" in text:
        raise ConfigError([Problem((), "file contains a NUL byte",
                                   *_line_column(text, text.index("\x00")))], filename)
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
        except yaml.reader.ReaderError as exc:
            raise ConfigError([Problem(
                (), f"character {_codepoint(exc.character)} is not allowed in YAML",
                *_line_column(text, exc.position),
            )], filename) from None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
            raise ConfigError([Problem((), f"YAML error: {first}")], filename) from None
        except RecursionError:
            raise ConfigError([Problem((), "YAML nested too deeply")], filename) from None
        if root is None:
            raise ConfigError([Problem((), "the file is empty")], filename)
        walker = _Walker(loader, filename)
        try:
            data = walker.walk(root, ())
        except _TooBig as exc:
            raise ConfigError([Problem((), str(exc), exc.line, exc.column)], filename) from None
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


def _codepoint(character: int | str) -> str:
    code = character if isinstance(character, int) else ord(character[:1] or "\0")
    return f"U+{code:04X}"


def _line_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


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
