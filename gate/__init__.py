"""parity-gate: catch train-inference and version-to-version logprob drift
in LLM inference engines before it reaches an RL training run.

Public API (everything else is internal and may change):
- the trace writer/reader, for trainers that dump their own logprobs;
- the pure comparison, for tools that want measures without the CLI.
"""
from __future__ import annotations

__version__ = "0.1.0"

from gate.compare import ComparisonResult, Tolerance, compare_records, compare_traces
from gate.errors import BadInput, GateError, InfraError, StaleGolden
from gate.trace import Manifest, Record, Scores, TraceReader, TraceWriter, read_trace

__all__ = [
    "__version__", "Manifest", "Record", "Scores", "TraceWriter", "TraceReader", "read_trace",
    "compare_records", "compare_traces", "ComparisonResult", "Tolerance",
    "GateError", "BadInput", "InfraError", "StaleGolden",
]
