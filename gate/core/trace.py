"""Trace format v1: one JSON header line (the manifest), one line per record,
one trailer line. Documented in docs/trace-format.md, schema in
gate/schemas/trace-v1.schema.json (generated from gate/core/models.py).

This is also the writer API a trainer uses to dump its own per-token
logprobs (docs/trace-format.md, "Writing traces from a trainer").

The format's values are `core/trace_format`, the writer `core/trace_writer`,
the reader `core/trace_reader`; this module is the public API that gathers
them (docs/trace-format.md names `gate.core.trace`)."""
from __future__ import annotations

from gate.core.trace_format import FORMAT, MAJOR, MINOR, PATHS, TRACE_FILE, Manifest, Record, Scores, trace_path
from gate.core.trace_reader import TraceReader, read_trace
from gate.core.trace_writer import TraceWriter

__all__ = ["FORMAT", "MAJOR", "MINOR", "TRACE_FILE", "PATHS", "Scores", "Record", "Manifest",
           "TraceWriter", "TraceReader", "read_trace", "trace_path"]
