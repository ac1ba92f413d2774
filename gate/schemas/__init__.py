"""JSON Schemas of the trace format and verdict.json (shipped with the package)."""
