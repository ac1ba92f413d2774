"""Studies beside the main line, each a client of core, run and report:
diagnose (ablations that name a cause), calibrate (noise floor -> policy),
determinism, weight update, bisect. None imports the command layer."""
