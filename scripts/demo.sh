#!/usr/bin/env bash
# The built-in demo: build the tiny model, record a golden, check an
# unchanged engine (passes), check a changed one (fails), print both verdicts.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=demo-out
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}

step() { printf '\n== %s\n' "$*"; }

step "1/4 build the tiny model (random weights, local tokenizer; nothing downloaded)"
"$PY" -m gate tiny-model --out .cache/tiny-model --seed 0 --force
rm -rf "$OUT"

step "2/4 record a golden (logprobs_mode=raw_logprobs, greedy and temperature 0.7)"
"$PY" -m gate record --suite examples/suite.yaml --out "$OUT/golden" 2>"$OUT.log" || { cat "$OUT.log"; exit 1; }

step "3/4 check the unchanged engine (expect PASS, exit 0)"
set +e
"$PY" -m gate check --suite examples/suite.yaml --golden "$OUT/golden" --out "$OUT/unchanged" 2>>"$OUT.log"
pass_rc=$?
step "4/4 check with logprobs_mode=processed_logprobs (expect FAIL, exit 1)"
"$PY" -m gate check --suite examples/suite.yaml --golden "$OUT/golden" --out "$OUT/processed" \
  --engine-arg logprobs_mode=processed_logprobs 2>>"$OUT.log"
fail_rc=$?
set -e
mv "$OUT.log" "$OUT/engine.log"

step "verdicts"
echo "unchanged engine:          exit $pass_rc  ($OUT/unchanged/verdict.json, report: $OUT/unchanged/report.html)"
echo "processed_logprobs engine: exit $fail_rc  ($OUT/processed/verdict.json, report: $OUT/processed/report.html)"
echo "PR comment preview:        $OUT/processed/comment.md"
echo "engine log:                $OUT/engine.log"
if [ "$pass_rc" -ne 0 ] || [ "$fail_rc" -ne 1 ]; then
  echo "demo: unexpected exit codes (want 0 and 1)" >&2
  exit 1
fi
echo "demo OK"
