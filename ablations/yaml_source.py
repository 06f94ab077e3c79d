"""Safe YAML loading that remembers where every value came from.

Why a module of its own: every later check (schema, lineage, the task's Config) wants to say
``studies.yaml:42: studies[3].grid.lr[1]: ...`` rather than "somewhere in the file". PyYAML's
``safe_load`` throws the positions away, so we compose the node graph with a safe loader (no
Python tags, no code execution) and construct plain data ourselves, recording the 1-based line of
every key path on the way. Two YAML defaults that bite study files are fixed here as well:

* duplicate keys in a mapping are an error (PyYAML silently keeps the last one); a key that
  overrides one merged in with ``<<: *anchor`` is no duplicate;
* ``1e-4`` is a float (YAML 1.1 requires a dot, so PyYAML would return the string ``"1e-4"``);
* ``6:45`` is text, not YAML 1.1's base-60 integer 405 (the report's training times).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ablations.errors import StudyFileError

PathKey = Union[str, int]
KeyPath = tuple  # tuple[PathKey, ...]

_MAX_NODES = 200_000  # guards against alias bombs ("billion laughs")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style floats (``1e-4``, ``5E+3``)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
for _ch in list("-+0123456789."):
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, [])
        if tag != "tag:yaml.org,2002:float"]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
# ints without YAML 1.1's base-60 form, so "time: 6:45" stays the text "6:45" (not 405)
_INT_RE = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
for _ch in list("-+0123456789"):
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, [])
        if tag != "tag:yaml.org,2002:int"]
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars) plus the line of every key path in it."""

    file: str
    data: Any
    lines: dict = field(default_factory=dict)  # KeyPath -> 1-based line

    def line_for(self, path: KeyPath) -> int | None:
        """Line of ``path``, or of its longest recorded prefix (a missing key -> its parent)."""
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: KeyPath, message: str, suggestion: str | None = None) -> StudyFileError:
        """A StudyFileError located at ``path``."""
        return StudyFileError(self.file, message, line=self.line_for(path),
                              key=format_path(path) or None, suggestion=suggestion)


def format_path(path: KeyPath) -> str:
    """``('studies', 2, 'grid', 'lr', 0)`` -> ``studies[2].grid.lr[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; unreadable files and YAML errors raise StudyFileError."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(name, "file not found") from None
    except UnicodeDecodeError as exc:
        raise StudyFileError(name, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise StudyFileError(name, f"cannot read: {exc.strerror or exc}") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, file: str = "<string>") -> YamlDocument:
    """Parse one YAML document safely, returning data and the line map."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc):
                raise StudyFileError(file, "a study file holds one YAML document (found a "
                                     "second '---')", line=_mark_line(exc)) from None
            raise
        doc = YamlDocument(file, None, {})
        if node is not None:
            builder = _Builder(loader, doc)
            doc.data = builder.build(node, ())
        return doc
    except StudyFileError:
        raise
    except yaml.constructor.ConstructorError as exc:
        raise StudyFileError(file, f"unsupported YAML: {exc.problem} (study files hold plain data; "
                             "tags such as !!python/... are refused)", line=_mark_line(exc)) from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        raise StudyFileError(file, f"YAML syntax error: {problem}", line=_mark_line(exc)) from None
    except yaml.YAMLError as exc:
        raise StudyFileError(file, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return None if mark is None else mark.line + 1


class _Builder:
    """Turns composed nodes into plain data, recording lines and rejecting duplicate keys."""

    def __init__(self, loader: _Loader, doc: YamlDocument):
        self.loader, self.doc, self.count, self.stack = loader, doc, 0, set()
        self.merged: dict[int, int] = {}  # id(mapping node) -> merged pairs leading its value

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise StudyFileError(self.doc.file, "document too large (alias expansion?)",
                                 line=node.start_mark.line + 1)
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.stack:
            raise StudyFileError(self.doc.file, "recursive YAML alias",
                                 line=node.start_mark.line + 1, key=format_path(path) or None)
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != "tag:yaml.org,2002:seq":
                    raise StudyFileError(self.doc.file, f"unsupported YAML tag {node.tag}",
                                         line=node.start_mark.line + 1,
                                         key=format_path(path) or None)
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self.stack.discard(id(node))
        raise StudyFileError(self.doc.file, f"unsupported YAML node {node.tag}",
                             line=node.start_mark.line + 1)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict:
        if node.tag not in ("tag:yaml.org,2002:map",):
            raise StudyFileError(self.doc.file, f"unsupported YAML tag {node.tag}",
                                 line=node.start_mark.line + 1, key=format_path(path) or None)
        # merge keys (<<: *anchor): flatten_mapping puts the merged pairs first (of several
        # merged maps, the earlier map's last), then the explicit ones. As YAML's merge spec
        # says, a merged key is overridden (by a later merged map's or an explicit key); only a
        # key given twice explicitly is a duplicate.
        # An aliased node is flattened once: later visits reuse its count of merged pairs.
        if id(node) not in self.merged:
            explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)
            self.merged[id(node)] = len(node.value) - explicit
        merged = self.merged[id(node)]
        winner: dict = {}  # key -> (key node, value node) that gives its value; first seen first
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                raise StudyFileError(self.doc.file, "mapping keys must be plain scalars",
                                     line=key_node.start_mark.line + 1,
                                     key=format_path(path) or None)
            key = self.loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # pragma: no cover - scalars are hashable
                raise StudyFileError(self.doc.file, "unhashable mapping key",
                                     line=key_node.start_mark.line + 1) from None
            if key in winner and index >= merged and winner[key][2] >= merged:
                raise StudyFileError(
                    self.doc.file, f"duplicate key '{key}' (first given on line "
                    f"{winner[key][0].start_mark.line + 1})", line=key_node.start_mark.line + 1,
                    key=format_path(path + (key,)))
            winner[key] = (key_node, value_node, index)  # the later pair wins
        out: dict = {}
        for key, (key_node, value_node, _) in winner.items():  # only winners are built
            self.doc.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, path + (key,))
        return out


class LocatedError(ValueError):
    """A problem inside a value, at ``path`` relative to that value.

    The helpers that check one part of a study file (seeds, grid, variants, lineage) raise this;
    the schema and plan code prepend the value's own key path and turn it into a StudyFileError.
    """

    def __init__(self, message: str, *path: PathKey, suggestion: str | None = None):
        super().__init__(message)
        self.message, self.path, self.suggestion = message, tuple(path), suggestion
