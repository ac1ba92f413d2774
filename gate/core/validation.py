"""A value checked against a model, its first problem said in one line:
what the schema wants at which JSON path, and what it got
(`verdict.checks[0].status must be one of 'pass', 'fail', 'not_comparable',
got 3`). The readers of verdict.json, bisect.json, the policy and the trace
lines raise it as their BadInput."""
from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ValidationError

from gate.core.jsonpath import json_path
from gate.core.schema_docs import SCHEMAS, model_of, schema_of

__all__ = ["problem"]

_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "a boolean", "null": "null"}


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


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _branches(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(root, node)
    return [b for sub in node["anyOf"] for b in _branches(root, sub)] if "anyOf" in node else [node]


def _step(root: dict[str, Any], node: dict[str, Any], key: str | int, holder: Any) -> dict[str, Any]:
    """The sub-schema for `holder[key]`, where `holder` is the value `node` describes."""
    want = "object" if isinstance(holder, dict) else "array"
    for b in _branches(root, node):
        if b.get("type") == want:
            if want == "array":
                prefix = b.get("prefixItems", [])
                return prefix[key] if isinstance(key, int) and key < len(prefix) else b.get("items", {})
            props = b.get("properties", {})
            extra = b.get("additionalProperties", {})
            return props.get(key, extra if isinstance(extra, dict) else {})
    return {}


def _wants(root: dict[str, Any], node: dict[str, Any], here: Any) -> str:
    """What a schema node accepts and what it got, in words: "one of 'pass',
    'fail', got 3", "a number or null, got the string 'x'"."""
    parts = []
    for b in _branches(root, node):
        if "enum" in b:
            return "one of " + ", ".join(_show(o) for o in b["enum"]) + f", got {_show(here)}"
        if "const" in b:
            return f"{_show(b['const'])}, got {_show(here)}"
        t = b.get("type")
        parts += [_NAMES.get(x, x) for x in ([t] if isinstance(t, str) else t or [])]
    return " or ".join(dict.fromkeys(parts)) + f", got {_describe(here)}" if parts else ""


_POS_INF = "+inf (a number too large for a float, such as 1e400, reads as +inf)"
_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"), "greater_than": (">", "gt"),
           "less_than": ("<", "lt")}


def _home(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema document `model` is generated into, and its node there."""
    for name in SCHEMAS:
        top, root = model_of(name), schema_of(name)
        if name == "trace-v1.schema.json":  # one schema for every line: the models are its $defs
            if model.__name__ in root["$defs"]:
                return root, root["$defs"][model.__name__]
        elif top is model:
            return root, root
    raise KeyError(model.__name__)


def _show_keys(keys: list[Any]) -> str:
    shown = sorted(map(str, keys))[:5]
    return "[" + ", ".join(ascii(k) if len(k) <= 40 else ascii(k[:37] + "...") for k in shown) + \
        (", ...]" if len(keys) > 5 else "]")


def problem(model: type[BaseModel], value: Any, name: str, *, open_objects: bool = False) -> str | None:
    """The first place `value` breaks `model`, as one line (what, where), or
    None. `open_objects` accepts keys the model does not list (a file from a
    newer minor version of the format may add optional keys)."""
    try:
        model.model_validate(value)
        return None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if open_objects:
        errors = [e for e in errors if e["type"] != "extra_forbidden"]
        if not errors:
            return None
    err = errors[0]
    root, node = _home(model)
    path, here = name, value
    loc = list(err["loc"])
    for i, key in enumerate(loc):
        if err["type"] == "extra_forbidden" and i == len(loc) - 1:
            unknown = [e["loc"][-1] for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == err["loc"][:-1]]
            return f"{path} has unknown keys {_show_keys(unknown)}"
        if isinstance(here, dict) and isinstance(key, str) and key in here:
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif isinstance(here, list) and isinstance(key, int) and 0 <= key < len(here):
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif err["type"] == "missing" and i == len(loc) - 1:
            if isinstance(key, int) and isinstance(here, list):  # a tuple's item
                return f"{path} must hold at least {key + 1} items, got {len(here)}"
            return f"{path} has no {key!r}"
        else:
            break  # a union member's tag: the path ends here
    if err["type"] in _BOUNDS:
        if type(here) is float and here == math.inf:
            return f"{path} is {_POS_INF}"
        op, key = _BOUNDS[err["type"]]
        return f"{path} must be {op} {err['ctx'][key]}, got {_show(here)}"
    if err["type"] in ("too_short", "too_long") and isinstance(here, list):
        most = "at least" if err["type"] == "too_short" else "at most"
        want = err["ctx"].get("min_length" if err["type"] == "too_short" else "max_length")
        return f"{path} must hold {most} {want} items, got {len(here)}"
    wants = _wants(root, node, here)
    if wants and (err["type"].endswith(("_type", "literal_error", "enum")) or err["type"] == "value_error"):
        return f"{path} must be {wants}"
    return f"{path}: {err['msg']}"
