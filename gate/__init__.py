"""parity-gate: catch train-inference and version-to-version logprob drift
in LLM inference engines before it reaches an RL training run.

Public API (everything else is internal and may change):
- the trace writer/reader, for trainers that dump their own logprobs;
- the pure comparison, for tools that want measures without the CLI.

The names below are imported on first use, so `import gate` (and with it
`parity-gate --help`) does not pay for numpy.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

# public name -> the module that defines it
_LAZY = {
    "ComparisonResult": "gate.core.compare", "Tolerance": "gate.core.channel", "compare_records": "gate.core.compare",
    "compare_traces": "gate.core.compare",
    "BadInput": "gate.core.errors", "GateError": "gate.core.errors", "InfraError": "gate.core.errors", "StaleGolden": "gate.core.errors",
    "Manifest": "gate.core.trace", "Record": "gate.core.trace", "Scores": "gate.core.trace", "TraceReader": "gate.core.trace",
    "TraceWriter": "gate.core.trace", "read_trace": "gate.core.trace",
}

__all__ = [
    "__version__", "Manifest", "Record", "Scores", "TraceWriter", "TraceReader", "read_trace",
    "compare_records", "compare_traces", "ComparisonResult", "Tolerance",
    "GateError", "BadInput", "InfraError", "StaleGolden",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from gate.core.channel import Tolerance
    from gate.core.compare import ComparisonResult, compare_records, compare_traces
    from gate.core.errors import BadInput, GateError, InfraError, StaleGolden
    from gate.core.trace import Manifest, Record, Scores, TraceReader, TraceWriter, read_trace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
