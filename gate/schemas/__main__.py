"""Regenerate the JSON Schemas in this folder from the models in
gate/core/models.py: `python -m gate.schemas` (writes), `python -m gate.schemas
--check` (exit 1 and name the files that differ). trace-v1.schema.json is still
written by hand (docs/architecture.md section 4)."""
from __future__ import annotations

import sys
from pathlib import Path

from gate.core.fsutil import atomic_write_text
from gate.core.schema_docs import SCHEMAS, schema_text

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    stale = []
    for name in SCHEMAS:
        text, path = schema_text(name), HERE / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if "--check" not in argv:
            atomic_write_text(path, text)
    verb = "differ from the models (run 'python -m gate.schemas')" if "--check" in argv else "written"
    for name in stale:
        print(f"gate/schemas/{name}: {verb}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
