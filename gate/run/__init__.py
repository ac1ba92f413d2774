"""Running a suite: loading and validating it, the batch plan and replay,
the engine adapters (vLLM, transformers), checkpoints, shards, per-release
environments, and the small test model.

Imports the core and nothing above it; vllm, torch and transformers only
inside the functions that need them."""
