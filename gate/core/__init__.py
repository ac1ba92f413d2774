"""The core: the trace format, the measures, compare, the relation between
sampler and scorer (semantics), the policy and the verdict, model identity.

Pure: no engine, no network, no CLI. Imports only the standard library,
PyYAML and numpy, and nothing above it (tests/unit/test_layers.py)."""
