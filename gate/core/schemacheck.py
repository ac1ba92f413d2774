"""A small JSON Schema validator for the project's own schema files
(gate/schemas/*.json), so no dependency is needed to check a trace header or a
verdict.json before using it.

It implements the keywords in `SUPPORTED`; annotation keywords (`title`,
`description`, ...) are skipped, and tests/adversarial/test_report_inputs.py
fails when a schema file starts using a keyword this module does not know.
`Schema.first_error` returns the first problem in document order as one
line that names the JSON path (`verdict.checks[0].status`), or None.

Where the specification and Python's json differ, it is stricter, because
the values feed Python and numpy code that would otherwise crash on them:
- "integer" is a number written without fraction or exponent (Python int,
  never bool): a token id 1.0 is refused;
- "number" must convert to a float: NaN and a 400-digit integer are
  refused, and a maximum of 1.7976931348623157e+308 refuses +inf (which is
  what json makes of 1e400).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping

__all__ = ["SUPPORTED", "Schema", "load_schema", "json_path", "first_invalid_text"]

_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples",
                          "deprecated", "readOnly", "writeOnly"})
SUPPORTED = _ANNOTATIONS | frozenset({
    "type", "enum", "const", "required", "properties", "additionalProperties", "items", "prefixItems", "$ref",
    "oneOf", "anyOf", "allOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
    "maxItems", "minLength", "maxLength",
})
_FLOAT_MAX = 1.7976931348623157e308
_POS_INF = "+inf (a number too large for a float, such as 1e400, reads as +inf)"
_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "a boolean", "null": "null"}


def _is(kind: str, value: Any) -> bool:
    t = type(value)
    if kind == "integer":
        return t is int
    if kind == "number":
        return (t is float and value == value) or (t is int and -_FLOAT_MAX <= value <= _FLOAT_MAX)
    return t is {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}.get(kind)


def _describe(value: Any) -> str:
    """What a value from the input is, in words: 'the string 'a'', 'an array'."""
    t = type(value)
    if value is None or t is bool:
        return json.dumps(value)
    if t is str:
        return f"the string {_show(value)}"
    if t is int:
        return f"the integer {_show(value)}" if abs(value) < 10 ** 30 else _show(value)
    if t is float:
        return f"the number {_show(value)}"
    return {dict: "an object", list: "an array"}.get(t, t.__name__)


def _show(value: Any) -> str:
    """A short, one-line rendering of a value from the input (never the
    whole of a large or deeply nested one)."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    if isinstance(value, float) and math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"a {len(str(abs(value)))}-digit integer"
    text = ascii(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_path(path: str, key: str | int) -> str:
    """`path.key`, `path[3]`, or `path['odd key']` (ASCII-escaped: one line, always)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() and key.isascii() else f"{path}[{ascii(key)}]"


@dataclass(frozen=True)
class Schema:
    """One schema document; `at` picks a sub-schema by JSON pointer
    (`#/$defs/record`), so one file can check several kinds of values."""

    root: Mapping[str, Any]
    pointer: str = "#"

    def at(self, pointer: str) -> "Schema":
        return Schema(self.root, pointer)

    def first_error(self, value: Any, name: str = "value", *, open_objects: bool = False) -> str | None:
        """The first place `value` breaks the schema, as one line, or None.
        `open_objects` accepts keys the schema does not list (a file from a
        newer minor version of the format may add optional keys)."""
        return _Check(self.root, open_objects).run(value, _resolve(self.root, self.pointer), name)


def _resolve(root: Mapping[str, Any], pointer: str) -> Mapping[str, Any]:
    if not pointer.startswith("#"):
        raise ValueError(f"only local references are supported, got {pointer!r}")
    node: Any = root
    for part in pointer[1:].split("/")[1:]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@dataclass(frozen=True)
class _Check:
    root: Mapping[str, Any]
    open_objects: bool

    def run(self, value: Any, schema: Any, path: str) -> str | None:
        if schema is True or schema == {}:
            return None
        if schema is False:
            return f"{path} is not allowed"
        if "$ref" in schema:
            err = self.run(value, _resolve(self.root, schema["$ref"]), path)
            if err:
                return err
        types = schema.get("type")
        if types is not None:
            types = [types] if isinstance(types, str) else types
            if not any(_is(t, value) for t in types):
                if type(value) is float and value == math.inf and "number" in types:
                    return f"{path} is {_POS_INF}"
                want = " or ".join(_NAMES.get(t, t) for t in types)
                return f"{path} must be {want}, got {_describe(value)}"
        if "const" in schema and not _same(value, schema["const"]):
            return f"{path} must be {_show(schema['const'])}, got {_show(value)}"
        if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
            options = ", ".join(_show(o) for o in schema["enum"])
            return f"{path} must be one of {options}, got {_show(value)}"
        for err in (self._number(value, schema, path), self._object(value, schema, path),
                    self._array(value, schema, path), self._string(value, schema, path),
                    self._combined(value, schema, path)):
            if err:
                return err
        return None

    @staticmethod
    def _number(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
        if type(value) not in (int, float):
            return None
        if "maximum" in schema and value > schema["maximum"]:
            if value == math.inf:
                return f"{path} is {_POS_INF}"
            return f"{path} must be <= {schema['maximum']}, got {_show(value)}"
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path} must be >= {schema['minimum']}, got {_show(value)}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            return f"{path} must be < {schema['exclusiveMaximum']}, got {_show(value)}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{path} must be > {schema['exclusiveMinimum']}, got {_show(value)}"
        return None

    def _object(self, value: Any, schema: Mapping[str, Any], path: str) -> str | None:
        if type(value) is not dict:
            return None
        for key in schema.get("required", ()):
            if key not in value:
                return f"{path} has no {key!r}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        unknown = [k for k in value if k not in props]
        if extra is False and unknown and not self.open_objects:
            return f"{path} has unknown keys {_show_keys(unknown)}"
        for key, item in value.items():
            sub = props.get(key, extra if extra is not False else True)
            err = self.run(item, sub, json_path(path, key))
            if err:
                return err
        return None

    def _array(self, value: Any, schema: Mapping[str, Any], path: str) -> str | None:
        if type(value) is not list:
            return None
        if "minItems" in schema and len(value) < schema["minItems"]:
            return f"{path} must hold at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path} must hold at most {schema['maxItems']} items, got {len(value)}"
        prefix = schema.get("prefixItems", ())
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items", True)
            err = self.run(item, sub, json_path(path, i))
            if err:
                return err
        return None

    @staticmethod
    def _string(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
        if type(value) is not str:
            return None
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{path} must be at least {schema['minLength']} characters long"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path} must be at most {schema['maxLength']} characters long"
        return None

    def _combined(self, value: Any, schema: Mapping[str, Any], path: str) -> str | None:
        for sub in schema.get("allOf", ()):
            err = self.run(value, sub, path)
            if err:
                return err
        for key in ("anyOf", "oneOf"):
            if key not in schema:
                continue
            errors = [self.run(value, sub, path) for sub in schema[key]]
            passed = errors.count(None)
            if key == "oneOf" and passed > 1:
                return f"{path} matches more than one of its allowed forms"
            if not passed:
                # the branch that got furthest (its type matched) says the most
                typed = [e for e, sub in zip(errors, schema[key]) if not _type_error(value, sub)]
                return (typed or errors)[0]
        return None


def _type_error(value: Any, schema: Any) -> bool:
    if not isinstance(schema, Mapping) or "type" not in schema:
        return False
    types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
    return not any(_is(t, value) for t in types)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return a == b
    return type(a) is type(b) and a == b


def _show_keys(keys: list[str]) -> str:
    shown = sorted(keys)[:5]
    return "[" + ", ".join(ascii(k) if len(k) <= 40 else ascii(k[:37] + "...") for k in shown) + \
        (", ...]" if len(keys) > 5 else "]")


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> Schema:
    """A schema file shipped in gate/schemas (e.g. "verdict.schema.json")."""
    text = resources.files("gate.schemas").joinpath(name).read_text(encoding="utf-8")
    return Schema(json.loads(text))


def first_invalid_text(value: Any, name: str = "value") -> str | None:
    """The JSON path of the first string or key that is not valid Unicode (a
    lone surrogate such as the escape \\ud800, which json reads but no UTF-8
    file can hold), or None."""
    stack: list[tuple[str, Any]] = [(name, value)]
    while stack:
        path, item = stack.pop()
        if type(item) is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return path
        elif type(item) is dict:
            for key in reversed(list(item)):
                sub = json_path(path, key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{sub} (the key)"
                stack.append((sub, item[key]))
        elif type(item) is list:
            stack.extend((json_path(path, i), item[i]) for i in reversed(range(len(item))))
    return None
