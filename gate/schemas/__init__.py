"""JSON Schemas of the trace format, verdict.json, bisect.json and the policy (shipped with the package;
all but the trace schema generated from gate/core/models.py: python -m gate.schemas)."""
