"""The JSON Schemas of gate/schemas/, generated from the models
(`python -m gate.schemas`): one file per document, the trace's line models
gathered into one schema for every line. tests/unit/test_models.py fails
when a committed file differs from what is generated here."""
from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel

from gate.core.models import Bisect, End, Header, Record, Verdict

__all__ = ["SCHEMAS", "schema_of", "schema_text", "model_of"]

_TRACE_DESCRIPTION = (
    "Validate each line against this schema: it is a header, a record or the end marker. -Infinity logprobs are "
    "written as the JSON extension token -Infinity (Python's json); NaN and +Infinity are never valid, and a number "
    "too large for a float (1e400) is refused like +Infinity. Strings must be valid Unicode (no lone surrogate "
    "escapes such as \\ud800). This schema describes minor version 1 exactly: a reader ignores keys it does not "
    "know only in a file whose header 'minor' is newer than its own (minor versions add optional keys only), and "
    "refuses them otherwise. Checks that a schema cannot express (docs/trace-format.md): score lists as long as "
    "the tokens they score, each top_ids row as long as its top_logprobs row, records sorted by (config, "
    "prompt_id, sample), and the end marker's count.")


def _trace_schema() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema
    refs, body = models_json_schema([(m, "validation") for m in (Header, Record, End)], by_alias=True)
    return {"description": _TRACE_DESCRIPTION, "oneOf": [refs[(m, "validation")] for m in (Header, Record, End)],
            **body}


# file name -> its title; the model each is generated from is model_of(name)
SCHEMAS: dict[str, str] = {
    "verdict.schema.json": "parity-gate verdict.json, version 1 (docs/verdict.md)",
    "bisect.schema.json": "parity-gate bisect.json, version 1 (docs/bisect.md)",
    "policy.schema.json": "parity-gate policy file (docs/policy.md)",
    "trace-v1.schema.json": "parity-gate trace format 1.1 (one JSON value per line)",
}


def model_of(name: str) -> type[BaseModel] | None:
    """The model a schema file is generated from (None: the trace's several line models)."""
    if name == "policy.schema.json":
        from gate.core.policy_model import PolicyFile
        return PolicyFile
    return {"verdict.schema.json": Verdict, "bisect.schema.json": Bisect}.get(name)


def _tidy(node: Any) -> Any:
    """Drop what pydantic adds for Python's sake: titles made from field names,
    `default: null` on optional keys (absent is the default; null may not be
    allowed), and the model docstrings (the file's title says it)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("title", "description") and isinstance(v, str) and node.get("type") == "object" \
                    and "properties" in node:
                continue
            if k == "title" and isinstance(v, str):
                continue
            if k == "default" and v is None:
                continue
            out[k] = v if k in ("enum", "const") else _tidy(v)
        return out
    if isinstance(node, list):
        return [_tidy(x) for x in node]
    return node


@functools.lru_cache(maxsize=None)
def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema `name` (a file in gate/schemas) as the model generates it."""
    title, model = SCHEMAS[name], model_of(name)
    body = _tidy(_trace_schema() if model is None else model.model_json_schema(by_alias=True))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://parity-gate.dev/schemas/{name}", "title": title, **body}


def schema_text(name: str) -> str:
    return json.dumps(schema_of(name), indent=1, ensure_ascii=False) + "\n"
