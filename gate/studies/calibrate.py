"""`parity-gate calibrate --suite S --out POLICY.yaml`: thresholds from a measured noise floor.

Measures the noise floor of every gated measure by running the suite's own
engine config several times, and at several batch shapes, and writes
suggested thresholds into a policy file (docs/calibration.md):

- record a golden once, then `check` it N-1 more times with the same batch
  plan (what the gate does): this is the floor the gate's thresholds sit on;
- `check` it with `max_num_seqs` forced to each batch shape: how much batch
  composition alone moves the numbers. Reported (policy comments and
  calibration.json), not folded into the thresholds, because `check` replays
  the golden's batch plan;
- checks are evaluated per sampling config, so floors and thresholds are too:
  one `per_config:` entry per config, and the overall floor as the default
  (for configs added later);
- thresholds: abs-diff measures scale linearly, so atol = max(margin * floor,
  atol_min); k3 scales with d^2, so k3 bound = max(margin^2 * floor,
  atol^2 / 2); mult-prob error = 1 + max(margin * (floor - 1), atol);
  top-1 agreement allows a whole number of disagreements that grows with the
  config's token count and the worst count measured, and is never below one
  (`top1_bound`).

Each run is a subprocess (one engine per process, one at a time)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from gate.core.channel import HIST_BINS_PER_DECADE, HIST_MAX_EXP, HIST_MIN_EXP
from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import atomic_write_text
from gate.core.measures import higher_is_better
from gate.core.rows import Verdict
from gate.core.verdict import read_verdict
from gate.run.child import error_line, run_child

__all__ = ["floors", "config_floors", "suggest", "top1_bound", "p99_interval", "render_policy", "calibrate",
           "add_arguments", "run", "DEFAULT_MARGIN", "ATOL_MIN", "TOP1_RATE_MIN", "TOP1_SIGMAS"]

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 10.0
ATOL_MIN = 1e-5  # 5x the largest real bump measured: 1.9e-6 (bf16 model, H100; docs/design.md section 4.3)
TOP1_RATE_MIN = 1e-3  # the default policy's 0.1% of near-tie disagreements (gate/core/thresholds.py)
TOP1_SIGMAS = 3.0     # slack above the worst measured count of top-1 flips, in Poisson standard deviations
_MEASURES = (("forced", "max_abs_diff"), ("forced", "mean_abs_diff"), ("forced", "p99_abs_diff"),
             ("forced", "k3_kl"), ("forced", "top1_agreement"), ("sampler", "max_abs_diff"),
             ("sampler", "p99_abs_diff"), ("sampler", "k3_kl"), ("sampler", "mult_prob_error"),
             ("free_run", "exact_match_rate"))
# Evidence behind each group's floor: the fewest tokens (sequences) any run compared.
_COUNTS = (("forced", "tokens"), ("sampler", "tokens"), ("free_run", "sequences"))


def _group(verdict: Verdict, config: str | None) -> dict[str, Any]:
    measures = verdict.get("measures") or {}
    if config is None:
        return measures.get("overall") or {}
    return (measures.get("per_config") or {}).get(config) or {}


def floors(verdicts: Sequence[Verdict], config: str | None = None) -> dict[str, float | None]:
    """Worst value of each measure over the runs (max; min for agreement and
    match rates), for one sampling config or (None) overall. Also the fewest
    tokens each channel compared (`forced.tokens`, ...): the evidence the
    floor rests on, and what the rate thresholds scale with."""
    out: dict[str, float | None] = {}
    for ch, m in _MEASURES + _COUNTS:
        vals = [(_group(v, config).get(ch) or {}).get(m) for v in verdicts]
        vals = [x for x in vals if x is not None]
        if not vals:
            out[f"{ch}.{m}"] = None
        else:
            out[f"{ch}.{m}"] = min(vals) if higher_is_better(m) or (ch, m) in _COUNTS else max(vals)
    return out


def config_floors(verdicts: Sequence[Verdict]) -> dict[str, dict[str, float | None]]:
    """`floors` of every sampling config any run measured."""
    names = sorted({name for v in verdicts for name in ((v.get("measures") or {}).get("per_config") or {})})
    return {name: floors(verdicts, name) for name in names}


def top1_bound(floor: float | None, tokens: float | None) -> float:
    """Lowest top-1 agreement to accept for a config of `tokens` positions.

    Top-1 flips between reruns are rare events (near-ties), so their number
    in a run is a count, not a magnitude: scaling it by the margin would
    make one flip in 20 tokens allow half of them. The rule: with m the
    most disagreements any calibration run had, allow
    k = max(1, ceil(0.1% x tokens), m + ceil(3 x sqrt(m))) disagreements:
    never fewer than one (a config of a few hundred tokens is not held to
    a rate it cannot express), the default policy's 0.1% on large configs,
    and three Poisson standard deviations above the worst count measured.
    The bound sits half a token below k disagreements, 1 - (k + 0.5) /
    tokens, so exactly k pass, k + 1 fail, and rounding the written number
    cannot move that. Real regressions flip 0.8% (fp32 head) to 4% (eager)
    of all tokens (docs/design.md section 4.4, run G3)."""
    if not tokens:
        return 1.0 - TOP1_RATE_MIN  # nothing compared: the default's rate
    m = round((1.0 - (1.0 if floor is None else floor)) * tokens)
    k = max(1, math.ceil(TOP1_RATE_MIN * tokens - 1e-9), m + math.ceil(TOP1_SIGMAS * math.sqrt(m)))
    return max(0.0, 1.0 - (k + 0.5) / tokens)


def _allowed_disagreements(bound: float, tokens: float | None) -> int | None:
    return None if not tokens else int(math.floor((1.0 - bound) * tokens))


def p99_interval(value: float | None) -> tuple[float, float] | None:
    """Where the true p99 lies, given only the reported one (verdicts that
    carry no `p99_bin`). compare.py takes p99 from a fixed-bin histogram and
    reports the upper edge of the bin; the lowest bin holds everything below
    10^HIST_MIN_EXP and the highest everything from 10^HIST_MAX_EXP up."""
    if value is None:
        return None
    if value <= 0:
        return (0.0, 0.0)

    low, high = 10.0 ** HIST_MIN_EXP, 10.0 ** HIST_MAX_EXP
    if value <= low * (1 + 1e-9):
        return (0.0, low)
    if value > high * (1 + 1e-9):
        return (high, math.inf)
    return (value / 10.0 ** (1.0 / HIST_BINS_PER_DECADE), value)


def _p99_span(channel: dict[str, Any]) -> tuple[float, float] | None:
    """The p99's bin as the comparison reported it (`p99_bin`: lower, upper),
    else derived from the reported value."""
    b = channel.get("p99_bin")
    if isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(x, (int, float)) for x in b):
        return (float(b[0]), float(b[1]))
    return p99_interval(channel.get("p99_abs_diff"))


def _p99_text(spans: Sequence[tuple[float, float] | None]) -> str:
    """The interval that holds every run's p99."""
    spans = [s for s in spans if s is not None]
    if not spans:
        return "n/a"
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    if hi == 0:
        return "0"
    if math.isinf(hi):
        return f">= {_fmt(lo)} (beyond the histogram's range)"
    return f"in [{_fmt(lo)}, {_fmt(hi)}] (histogram bins)"


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def _round_up(x: float, digits: int = 6) -> float:
    """An upper bound written with few digits must not drop below the floor it came from."""
    r = _round(x, digits)
    if r >= x * (1 - 1e-12) or x <= 0:  # float noise in x is not a reason to round up
        return r
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return _round(r + step, digits)


def suggest(floor: dict[str, float | None], margin: float = DEFAULT_MARGIN,
            atol_min: float = ATOL_MIN) -> dict[str, Any]:
    """Policy mapping (docs/policy.md keys) for one group of checks (a config,
    or the default) from that group's floors."""
    mx = max((floor.get(k) or 0.0) for k in ("forced.max_abs_diff", "sampler.max_abs_diff"))
    atol = _round_up(max(margin * mx, atol_min), 3)
    checks: dict[str, float] = {}
    for ch in ("forced", "sampler"):
        k3 = floor.get(f"{ch}.k3_kl")
        checks[f"{ch}.k3_kl"] = _round_up(max(margin ** 2 * max(k3 or 0.0, 0.0), atol ** 2 / 2))
    mpe = floor.get("sampler.mult_prob_error")
    checks["sampler.mult_prob_error"] = _round_up(1.0 + max(margin * max((mpe or 1.0) - 1.0, 0.0), atol))
    # 12 digits: the half-token gap is 0.5/tokens, far above the rounding
    checks["forced.top1_agreement"] = _round(top1_bound(floor.get("forced.top1_agreement"),
                                                        floor.get("forced.tokens")), 12)
    return {"atol": atol, "rtol": 0.0, "checks": checks}


def suggest_policy(overall: dict[str, float | None], per_config: dict[str, dict[str, float | None]],
                   margin: float = DEFAULT_MARGIN, atol_min: float = ATOL_MIN) -> dict[str, Any]:
    """The whole suggested policy: the overall floor's rules as the default,
    one `per_config` entry per config from its own floor."""
    policy = suggest(overall, margin, atol_min)
    policy["per_config"] = {name: suggest(fl, margin, atol_min) for name, fl in per_config.items()}
    return policy


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _fmt_measure(key: str, x: float | None) -> str:
    """Rates near 1 need their digits: 0.9995 is not 1."""
    return "n/a" if x is None else f"{x:.6g}" if higher_is_better(key) else _fmt(x)


def _yaml_float(x: float, digits: int = 6) -> str:
    """YAML 1.1 reads 1e-05 as a string: always write a mantissa dot and a signed exponent."""
    return ".inf" if math.isinf(x) else f"{x:.{digits}e}"


def _yaml_key(name: str) -> str:
    return json.dumps(name)  # a JSON string is a YAML double-quoted scalar: any config name is safe


def _rules_lines(rules: dict[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}atol: {_yaml_float(rules['atol'])}", f"{indent}rtol: {_yaml_float(rules['rtol'])}",
             f"{indent}checks:"]
    for k, v in rules["checks"].items():
        lines.append(f"{indent}  {k}: {_yaml_float(v, 12 if k == 'forced.top1_agreement' else 6)}")
    return lines


def _floor_comments(fl: dict[str, float | None], indent: str, p99: dict[str, list] | None = None) -> list[str]:
    out = []
    for k, v in fl.items():
        if v is None or k.endswith((".tokens", ".sequences", ".p99_abs_diff")):
            continue
        out.append(f"{indent}#   {k}: {_fmt_measure(k, v)}")
    for ch in ("forced", "sampler"):
        values = (p99 or {}).get(ch)
        if values:
            out.append(f"{indent}#   {ch}.p99_abs_diff {_p99_text(values)}")
    counts = [f"{fl[f'{ch}.{m}']:.0f} {ch} {m}" for ch, m in _COUNTS if fl.get(f"{ch}.{m}") is not None]
    if counts:
        out.append(f"{indent}#   evidence (fewest in any run): {', '.join(counts)}")
    return out


def render_policy(policy: dict[str, Any], same_plan: dict[str, float | None],
                  shapes: dict[str, dict[str, float | None]], runs: int, margin: float, suite: Path,
                  per_config: dict[str, dict[str, float | None]] | None = None,
                  p99: dict[str | None, dict[str, list]] | None = None) -> str:
    """The policy file, with the floors it came from as comments. `p99` maps a
    config (None: overall) to each channel's p99 values over the runs."""
    p99 = p99 or {}
    lines = [f"# parity-gate policy suggested by 'parity-gate calibrate --suite {suite}'",
             f"# noise floor from {runs} runs with the golden's batch plan (worst value of each measure), all "
             "configs together:"]
    lines += _floor_comments(same_plan, "", p99.get(None))
    for shape, fl in shapes.items():
        lines.append(f"# batch shape {shape} (reported, not gated: check replays the golden's batch plan):")
        lines += [f"#   {k}: {_fmt_measure(k, v)}" for k, v in fl.items()
                  if v is not None and not k.endswith((".tokens", ".sequences", ".p99_abs_diff"))]
        lines += [f"#   {ch}.p99_abs_diff {_p99_text([p99_interval(fl.get(f'{ch}.p99_abs_diff'))])}"
                  for ch in ("forced", "sampler") if fl.get(f"{ch}.p99_abs_diff") is not None]
    lines.append(f"# thresholds = floor x margin ({margin:g}; k3 scales with d^2, so x margin^2), never below "
                 f"atol {ATOL_MIN:g}; top-1 agreement allows k = max(1, ceil({TOP1_RATE_MIN:g} x tokens), "
                 f"m + ceil({TOP1_SIGMAS:g} x sqrt(m))) disagreements per config, m the most measured "
                 "(docs/calibration.md).")
    lines.append("# The default below applies to configs not listed under per_config.")
    lines += _rules_lines(policy, "")
    pc = policy.get("per_config") or {}
    if pc:
        lines.append("per_config:")
        for name, rules in pc.items():
            fl = (per_config or {}).get(name) or {}
            k = _allowed_disagreements(rules["checks"]["forced.top1_agreement"], fl.get("forced.tokens"))
            lines.append(f"  # config {name}: floor over {runs} runs"
                         + (f"; top-1 bound allows {k} disagreement{'s' if k != 1 else ''} in "
                            f"{fl['forced.tokens']:.0f} tokens" if k is not None else ""))
            lines += _floor_comments(fl, "  ", p99.get(name))
            lines.append(f"  {_yaml_key(name)}:")
            lines += _rules_lines(rules, "    ")
    return "\n".join(lines) + "\n"


def _p99_values(verdicts: Sequence[Verdict], configs: Sequence[str]
                ) -> dict[str | None, dict[str, list[tuple[float, float] | None]]]:
    """Each run's p99 bin, per config (None: overall) and channel."""
    return {config: {ch: [_p99_span(_group(v, config).get(ch) or {}) for v in verdicts]
                     for ch in ("forced", "sampler")}
            for config in [None, *configs]}


def _run_gate(args: list[str], log_path: Path, timeout: float, what: str) -> int:
    """One `parity-gate` command in its own process (its own engine), one at a
    time: returns once it and anything it left in its process group ended.
    Exit codes other than 0 and 1 raise, with the child's real error line."""
    res = run_child([sys.executable, "-m", "gate", *args], log_path, timeout)
    if res.timed_out:
        raise InfraError(f"calibrate: {what} ran past {timeout:.0f} s", f"see {log_path}")
    if res.returncode not in (0, 1):
        raise InfraError(f"calibrate: {what} failed (exit {res.returncode}): {_log_error(log_path)}",
                         f"see {log_path}")
    return res.returncode


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
    if _run_gate(["record", "--suite", str(suite), "--out", str(golden), "--force", *extra],
                 work / "record.log", timeout, "recording the golden") != 0:
        raise InfraError(f"calibrate: recording the golden failed (exit 1): {_log_error(work / 'record.log')}",
                         f"see {work / 'record.log'}")

    def check(name: str, more: list[str]) -> dict[str, Any]:
        res = work / name
        _run_gate(["check", "--suite", str(suite), "--golden", str(golden), "--out", str(res), "--force",
                   "--fail-on", "never", *extra, *more], work / f"{name}.log", timeout, f"run {name}")
        if not (res / "verdict.json").is_file():
            raise InfraError(f"calibrate: run {name} wrote no verdict: {_log_error(work / f'{name}.log')}",
                             f"see {work / (name + '.log')}")
        try:
            return read_verdict(res)
        except BadInput as exc:  # its own child wrote it: not the user's input
            raise InfraError(f"calibrate: run {name} wrote an unusable verdict: {exc.what}",
                             f"see {work / (name + '.log')}") from None

    reruns = [check(f"rerun-{i}", []) for i in range(1, runs)]
    shape_verdicts = {b: check(f"shape-{b}", ["--engine-arg", f"max_num_seqs={b}"]) for b in batch_shapes}
    shapes = {f"max_num_seqs={b}": floors([v]) for b, v in shape_verdicts.items()}
    same = floors(reruns)
    per_config = config_floors(reruns)
    policy = suggest_policy(same, per_config, margin)
    p99 = _p99_values(reruns, list(per_config))
    text = render_policy(policy, same, shapes, runs, margin, suite, per_config, p99)
    atomic_write_text(Path(out), text)
    report = {"policy": policy, "floor": same, "per_config": per_config,
              "p99": {("overall" if k is None else k): {ch: {"bins": [list(b) if b else None for b in spans],
                                                              "interval": _p99_text(spans)}
                                                         for ch, spans in v.items()} for k, v in p99.items()},
              "batch_shapes": shapes,
              "batch_shapes_per_config": {f"max_num_seqs={b}": config_floors([v]) for b, v in shape_verdicts.items()},
              "runs": runs, "margin": margin, "seconds": round(time.monotonic() - t0, 1)}
    atomic_write_text(Path(out).with_suffix(".calibration.json"),
                      json.dumps(report, indent=1) + "\n")
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _log_error(path: Path) -> str:
    try:
        return error_line(path.read_text(errors="replace"))
    except OSError:
        return "no log"


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
    for name, f in rep["per_config"].items():
        rules = rep["policy"]["per_config"][name]
        k = _allowed_disagreements(rules["checks"]["forced.top1_agreement"], f.get("forced.tokens"))
        print(f"  config {name}: forced max abs diff {_fmt(f['forced.max_abs_diff'])}, sampler max abs diff "
              f"{_fmt(f['sampler.max_abs_diff'])}, p99 {rep['p99'][name]['forced']['interval']}; atol "
              f"{rules['atol']:g}" + (f", top-1 allows {k} of {f['forced.tokens']:.0f}" if k is not None else ""))
    for shape, f in rep["batch_shapes"].items():
        print(f"  {shape}: forced max abs diff {_fmt(f['forced.max_abs_diff'])}, sampler max abs diff "
              f"{_fmt(f['sampler.max_abs_diff'])}, free-run exact match {_fmt(f['free_run.exact_match_rate'])}")
    print(f"suggested policy (default atol {rep['policy']['atol']:g}, {len(rep['per_config'])} per-config entries) "
          f"written to {args.out} ({rep['seconds']:.0f} s)")
    print(f"  next: parity-gate check --suite {args.suite} --golden GOLDEN --out RESULT --policy {args.out}")
    return 0
