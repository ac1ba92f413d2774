"""`parity-gate calibrate --suite S --out POLICY.yaml` (issue 5, item 8).

Measures the noise floor of every gated measure by running the suite's own
engine config several times, and at several batch shapes, and writes
suggested thresholds into a policy file (docs/calibration.md):

- record a golden once, then `check` it N-1 more times with the same batch
  plan (what the gate does): this is the floor the gate's thresholds sit on;
- `check` it with `max_num_seqs` forced to each batch shape: how much batch
  composition alone moves the numbers. Reported (policy comments and
  calibration.json), not folded into the thresholds, because `check` replays
  the golden's batch plan;
- thresholds: abs-diff measures scale linearly, so atol = max(margin * floor,
  atol_min); k3 (and k2) scale with d^2, so k3 bound = max(margin^2 * floor,
  atol^2 / 2); mult-prob error = 1 + max(margin * (floor - 1), atol);
  top-1 agreement = min(floor, 1 - 1e-3).

Each run is a subprocess (one engine per process)."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from gate._fsutil import atomic_write_text
from gate.errors import BadInput, InfraError

__all__ = ["floors", "suggest", "render_policy", "calibrate", "add_arguments", "run",
           "DEFAULT_MARGIN", "ATOL_MIN"]

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 10.0
ATOL_MIN = 1e-5  # 5x the 1.9e-6 a real cross-version bump moved fp32 scores (design.md section 4)
_MEASURES = (("forced", "max_abs_diff"), ("forced", "mean_abs_diff"), ("forced", "k3_kl"),
             ("forced", "top1_agreement"), ("sampler", "max_abs_diff"), ("sampler", "k3_kl"),
             ("sampler", "mult_prob_error"), ("free_run", "exact_match_rate"))


def floors(verdicts: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Worst value of each measure over the runs (max; min for agreement/match rates)."""
    out: dict[str, float | None] = {}
    for ch, m in _MEASURES:
        vals = [((v["measures"]["overall"].get(ch)) or {}).get(m) for v in verdicts]
        vals = [x for x in vals if x is not None]
        if not vals:
            out[f"{ch}.{m}"] = None
        else:
            out[f"{ch}.{m}"] = min(vals) if m in ("top1_agreement", "exact_match_rate") else max(vals)
    return out


def suggest(floor: dict[str, float | None], margin: float = DEFAULT_MARGIN,
            atol_min: float = ATOL_MIN) -> dict[str, Any]:
    """Policy mapping (docs/policy.md keys) from the floors."""
    mx = max((floor.get(k) or 0.0) for k in ("forced.max_abs_diff", "sampler.max_abs_diff"))
    atol = max(margin * mx, atol_min)
    checks: dict[str, float] = {}
    for ch in ("forced", "sampler"):
        k3 = floor.get(f"{ch}.k3_kl")
        checks[f"{ch}.k3_kl"] = max(margin ** 2 * max(k3 or 0.0, 0.0), atol ** 2 / 2)
    mpe = floor.get("sampler.mult_prob_error")
    checks["sampler.mult_prob_error"] = 1.0 + max(margin * max((mpe or 1.0) - 1.0, 0.0), atol)
    top1 = floor.get("forced.top1_agreement")
    checks["forced.top1_agreement"] = min(top1 if top1 is not None else 1.0, 1 - 1e-3)
    return {"atol": float(f"{atol:.3g}"), "rtol": 0.0, "checks": {k: float(f"{v:.6g}") for k, v in checks.items()}}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _yaml_float(x: float) -> str:
    """YAML 1.1 reads 1e-05 as a string: always write a mantissa dot and a signed exponent."""
    return f"{x:.6e}"


def render_policy(policy: dict[str, Any], same_plan: dict[str, float | None],
                  shapes: dict[str, dict[str, float | None]], runs: int, margin: float, suite: Path) -> str:
    lines = [f"# parity-gate policy suggested by 'parity-gate calibrate --suite {suite}'",
             f"# noise floor from {runs} runs with the golden's batch plan (worst value of each measure):"]
    lines += [f"#   {k}: {_fmt(v)}" for k, v in same_plan.items()]
    for shape, fl in shapes.items():
        lines.append(f"# batch shape {shape} (reported, not gated: check replays the golden's batch plan):")
        lines += [f"#   {k}: {_fmt(v)}" for k, v in fl.items() if v is not None]
    lines.append(f"# thresholds = floor x margin ({margin:g}; k3 scales with d^2, so x margin^2), never below "
                 f"atol {ATOL_MIN:g} (docs/calibration.md)")
    lines.append(f"atol: {_yaml_float(policy['atol'])}")
    lines.append(f"rtol: {_yaml_float(policy['rtol'])}")
    lines.append("checks:")
    lines += [f"  {k}: {_yaml_float(v)}" for k, v in policy["checks"].items()]
    return "\n".join(lines) + "\n"


Run = Callable[[list[str], Path], dict[str, Any] | None]


def _subprocess(args: list[str], log_path: Path, timeout: float) -> int:
    with open(log_path, "w") as fh:
        try:
            return subprocess.run([sys.executable, "-m", "gate", *args], stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1


def calibrate(suite: Path, out: Path, runs: int = 3, batch_shapes: Sequence[int] = (1,),
              margin: float = DEFAULT_MARGIN, work: Path | None = None, engine_args: Sequence[str] = (),
              timeout: float = 600) -> dict[str, Any]:
    if runs < 2:
        raise BadInput(f"--runs {runs}: calibration needs at least 2 runs (a golden and a rerun)", "use --runs 2 or more")
    own_work = work is None
    work = Path(work or tempfile.mkdtemp(prefix="parity-gate-calibrate."))
    work.mkdir(parents=True, exist_ok=True)
    extra = [x for e in engine_args for x in ("--engine-arg", e)]
    golden = work / "golden"
    t0 = time.monotonic()
    rc = _subprocess(["record", "--suite", str(suite), "--out", str(golden), "--force", *extra],
                     work / "record.log", timeout)
    if rc != 0:
        raise InfraError(f"calibrate: recording the golden failed (exit {rc})", f"see {work / 'record.log'}")

    def check(name: str, more: list[str]) -> dict[str, Any]:
        res = work / name
        rc = _subprocess(["check", "--suite", str(suite), "--golden", str(golden), "--out", str(res), "--force",
                          "--fail-on", "never", *extra, *more], work / f"{name}.log", timeout)
        if rc not in (0, 1) or not (res / "verdict.json").is_file():
            raise InfraError(f"calibrate: run {name} failed (exit {rc})", f"see {work / (name + '.log')}")
        return json.loads((res / "verdict.json").read_text())

    reruns = [check(f"rerun-{i}", []) for i in range(1, runs)]
    shapes = {f"max_num_seqs={b}": floors([check(f"shape-{b}", ["--engine-arg", f"max_num_seqs={b}"])])
              for b in batch_shapes}
    same = floors(reruns)
    policy = suggest(same, margin)
    text = render_policy(policy, same, shapes, runs, margin, suite)
    atomic_write_text(Path(out), text)
    report = {"policy": policy, "floor": same, "batch_shapes": shapes, "runs": runs, "margin": margin,
              "seconds": round(time.monotonic() - t0, 1)}
    atomic_write_text(Path(out).with_suffix(".calibration.json"), json.dumps(report, indent=1) + "\n")
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", required=True, type=Path, help="suite YAML to calibrate")
    parser.add_argument("--out", required=True, type=Path, help="policy YAML to write")
    parser.add_argument("--runs", type=int, default=3, help="engine runs with the same batch plan (default 3)")
    parser.add_argument("--batch-shapes", default="1", help="comma-separated max_num_seqs values to try (default 1)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="threshold = floor x margin (default 10)")
    parser.add_argument("--work", type=Path, help="keep the runs' folders here (default: a temp dir, removed)")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    try:
        shapes = [int(x) for x in str(args.batch_shapes).split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--batch-shapes {args.batch_shapes!r} is not a list of integers", "e.g. --batch-shapes 1,4") \
            from None
    rep = calibrate(args.suite, args.out, args.runs, shapes, args.margin, args.work, args.engine_arg)
    fl = rep["floor"]
    print(f"noise floor over {rep['runs']} runs: forced max abs diff {_fmt(fl['forced.max_abs_diff'])}, sampler max "
          f"abs diff {_fmt(fl['sampler.max_abs_diff'])}")
    for shape, f in rep["batch_shapes"].items():
        print(f"  {shape}: forced max abs diff {_fmt(f['forced.max_abs_diff'])}, sampler max abs diff "
              f"{_fmt(f['sampler.max_abs_diff'])}, free-run exact match {_fmt(f['free_run.exact_match_rate'])}")
    print(f"suggested policy (atol {rep['policy']['atol']:g}) written to {args.out} ({rep['seconds']:.0f} s)")
    print(f"  next: parity-gate check --suite {args.suite} --golden GOLDEN --out RESULT --policy {args.out}")
    return 0
