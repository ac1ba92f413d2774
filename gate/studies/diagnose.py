"""Automatic cause finding for a failing check (docs/diagnosis.md).

Given a failing result folder, move each engine or environment knob that
differs from the golden back to the golden's value, one at a time and then
all together, rerun the check for each (a fresh engine in a subprocess:
some settings are read at import), and name the knobs that restore parity,
with numbers. When none does, the remaining drift is numeric or
version-internal, and we say where it starts.

Pure parts (`summarize`, `drift_start`, and `plan_ablations` in
gate/studies/ablations.py) take data and return data; `diagnose` takes a
`runner` so tests can pass a fake one. Each ablation runs through
gate/run/child.py, like every engine command the gate spawns.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gate.core.errors import BadInput
from gate.core.fsutil import atomic_write_text
from gate.core.measures import as_float_array, short
from gate.core.rows import Verdict
from gate.core.semantics import semantics_sentence
from gate.core.trace import read_trace
from gate.core.verdict import read_verdict, write_verdict
from gate.report.render import render_result
from gate.run.child import GPU_MEMORY_HINT, GROUP_GRACE_S, error_line, is_gpu_memory_error, run_child
from gate.studies.ablations import Ablation, AblationOutcome, Runner, plan_ablations, show_value

__all__ = ["summarize", "drift_start", "diagnose",
           "diagnose_result_dir", "subprocess_runner", "DEFAULT_BUDGET_S", "add_arguments", "run"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 300.0
ABLATION_DIR = "diagnosis"


# ---------------------------------------------------------------- drift start (pure)
def drift_start(golden_dir: Path, result_dir: Path, atol: float) -> dict[str, Any]:
    """Where the drift begins: per channel, the earliest completion position
    whose |d| exceeds atol, how many sequences drift, and whether prompt
    positions (pure prefill, no sampled token involved) drift too."""
    ref = {r.key: r for r in read_trace(golden_dir).records()}
    out: dict[str, Any] = {}
    first: dict[str, list[int]] = {"forced": [], "sampler": []}
    prompt_drift = 0.0
    for cand in read_trace(result_dir).records():
        g = ref.get(cand.key)
        if g is None:
            continue
        if g.forced is not None and cand.forced is not None and \
                len(g.forced.logprobs) == len(cand.forced.logprobs):
            a, b = as_float_array(g.forced.logprobs), as_float_array(cand.forced.logprobs)
            with np.errstate(invalid="ignore"):
                d = np.nan_to_num(np.abs(b - a), nan=0.0)
            p = len(g.prompt_token_ids)
            prompt_drift = max(prompt_drift, float(d[:p].max()) if p else 0.0)
            hits = np.nonzero(d[p:] > atol)[0]
            if hits.size:
                first["forced"].append(int(hits[0]))
        if g.sampler is not None and cand.sampler is not None:
            n = 0
            for x, y in zip(g.completion_token_ids, cand.completion_token_ids):
                if x != y:
                    break
                n += 1
            a = np.array(g.sampler.logprobs[:n], dtype=np.float64)
            b = np.array(cand.sampler.logprobs[:n], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                hits = np.nonzero(np.nan_to_num(np.abs(b - a), nan=0.0) > atol)[0]
            if hits.size:
                first["sampler"].append(int(hits[0]))
    for ch, lst in first.items():
        out[ch] = {"sequences_drifting": len(lst), "earliest_position": min(lst) if lst else None,
                   "median_first_position": float(np.median(lst)) if lst else None}
    out["prompt_max_abs_diff"] = prompt_drift
    return out


# ---------------------------------------------------------------- summary (pure)
def _measures(verdict: Verdict) -> dict[str, Any]:
    overall = (verdict.get("measures") or {}).get("overall") or {}
    out = {}
    for ch in ("forced", "sampler"):
        s = overall.get(ch) or {}
        out[ch] = {k: s.get(k) for k in ("max_abs_diff", "mean_abs_diff", "k3_kl", "bitwise_equal_fraction")}
    fr = overall.get("free_run") or {}
    out["free_run"] = {"exact_match_rate": fr.get("exact_match_rate")}
    return out


_fmt = short  # one number format for messages (gate/core/measures.py)


def _numbers(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = []
    for ch, label in (("forced", "teacher-forced"), ("sampler", "sampler")):
        b = (before.get(ch) or {}).get("max_abs_diff")
        a = (after.get(ch) or {}).get("max_abs_diff")
        if b is None and a is None:
            continue
        parts.append(f"{label} max abs diff {_fmt(b)} -> {_fmt(a)}")
    return "; ".join(parts)


def _worst(m: dict[str, Any]) -> float:
    return max(((m.get(ch) or {}).get("max_abs_diff") or 0.0) for ch in ("forced", "sampler"))


def summarize(baseline: dict[str, Any], outcomes: Sequence[AblationOutcome], fixed: Sequence[dict[str, Any]],
              start: dict[str, Any] | None, semantics: dict[str, Any] | None = None,
              budget_s: float | None = None) -> dict[str, Any]:
    """The `diagnosis` object of verdict.json (docs/diagnosis.md)."""
    findings: list[dict[str, Any]] = []
    for o in outcomes:
        a = o.ablation
        if o.status != "ran":
            findings.append({"cause": a.description, "knobs": list(a.knobs), "ablation": a.name,
                             "restores_parity": False, "status": o.status,
                             "detail": f"not tested: {o.error or o.status}", "seconds": round(o.seconds, 1)})
            continue
        restores = o.verdict == "pass"
        before, after = _worst(baseline), _worst(o.measures)
        reduced = after < before / 10 if before > 0 else False
        how = ("restores parity" if restores else
               "reduces the drift but does not restore parity" if reduced else "does not restore parity")
        setting = ", ".join(f"{k}={show_value(v)}" for k, v in {**a.engine_args, **{k: v for k, v in a.env.items()}}
                            .items())
        findings.append({"cause": a.description, "knobs": list(a.knobs), "ablation": a.name,
                         "restores_parity": restores, "partial": (not restores) and reduced, "status": "ran",
                         "setting": setting, "measures_after": o.measures, "result_dir": o.result_dir,
                         "seconds": round(o.seconds, 1),
                         "detail": f"setting {setting} {how}: {_numbers(baseline, o.measures)}"})
    singles = [f for f in findings if f["ablation"] != "all" and f["status"] == "ran"]
    together = next((f for f in findings if f["ablation"] == "all" and f["status"] == "ran"), None)
    restoring = [f for f in singles if f["restores_parity"]]
    if restoring:
        names = "; ".join(f"{f['cause']} (setting {f['setting']} restores parity: "
                          f"{_numbers(baseline, f['measures_after'])})" for f in restoring)
        summary = f"likely cause: {names}"
        kind = "config"
    elif together and together["restores_parity"]:
        partial = [f["cause"] for f in singles if f.get("partial")]
        summary = (f"likely cause: several settings together; moving all of them back restores parity "
                   f"({_numbers(baseline, together['measures_after'])})"
                   + (f"; on their own, {', '.join(partial)} reduce the drift" if partial else ""))
        kind = "config (combined)"
    else:
        untested = [f for f in findings if f["status"] != "ran"]
        where = ""
        if start:
            fs = start.get("forced") or {}
            ss = start.get("sampler") or {}
            bits = []
            if fs.get("earliest_position") is not None:
                bits.append(f"teacher-forced drift in {fs['sequences_drifting']} sequences, earliest at completion "
                            f"position {fs['earliest_position']}")
            if ss.get("earliest_position") is not None:
                bits.append(f"sampler drift in {ss['sequences_drifting']} sequences, earliest at position "
                            f"{ss['earliest_position']}")
            if start.get("prompt_max_abs_diff"):
                bits.append(f"prompt positions drift too (max {_fmt(start['prompt_max_abs_diff'])}), so it is "
                            "present from the first prefill token")
            where = "; ".join(bits) + "; the layer of the cause is unknown" if bits else ""
        moved = ", ".join(f"{r['key']} {show_value(r.get('reference'))} -> {show_value(r.get('candidate'))}" for r in fixed)
        if untested:
            failed = [f for f in untested if f["status"] == "error"]
            skipped = [f for f in untested if f["status"] != "error"]
            bits = []
            if failed:
                first = failed[0]
                bits.append(f"{len(failed)} ablation(s) failed to run (first: {first['ablation']}: "
                            f"{first['detail'].removeprefix('not tested: ')})")
            if skipped:
                bits.append(f"{len(skipped)} ablation(s) did not run within the budget"
                            + (f" ({budget_s:.0f} s)" if budget_s else ""))
            summary = "undetermined: " + "; ".join(bits) + "; none of those that ran restores parity"
            kind = "undetermined"
        else:
            summary = ("no engine setting that could be moved back restores parity: the remaining drift is numeric "
                       "or version-internal" + (f" (differences not testable here: {moved})" if moved else ""))
            kind = "numeric"
        if where:
            summary += f"; {where}"
    semantic_line = (semantics or {}).get("summary")
    if semantic_line:
        summary += f". Sampler logprob semantics: {semantic_line}"
    return {"summary": summary, "kind": kind, "findings": findings,
            "not_ablated": [{"key": r["key"], "reference": r.get("reference"), "candidate": r.get("candidate"),
                             "why": r.get("why")} for r in fixed],
            "drift_start": start, "semantics": semantics, "baseline": baseline, "budget_s": budget_s}


def _parent_gpu_memory() -> dict[str, float] | None:
    """Free and total memory of the GPU as this process sees it, if this
    process already uses CUDA (never initialises it)."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - display only
        return None
    return {"free_gib": round(free / 2 ** 30, 2), "total_gib": round(total / 2 ** 30, 2)}


# ---------------------------------------------------------------- running
def subprocess_runner(suite: Path, golden: Path, engine_arg_items: Sequence[str],
                      policy: Path | None = None, log_dir: Path | None = None,
                      program: Sequence[str] | None = None, grace_s: float = GROUP_GRACE_S) -> Runner:
    """Each ablation is `parity-gate check` in its own process (fresh engine,
    fresh import-time settings) with --fail-on never into a private folder.
    One at a time: `run_child` returns only when the child's whole process
    group has ended, so two ablation engines never hold GPU memory at once.
    `program` replaces `python -m gate` (tests pass a fake child)."""
    program = list(program or [sys.executable, "-m", "gate"])

    def run_one(ablation: Ablation, out: Path, timeout: float) -> AblationOutcome:
        cmd = [*program, "check", "--suite", str(suite), "--golden", str(golden),
               "--out", str(out), "--force", "--fail-on", "never"]
        if policy is not None:
            cmd += ["--policy", str(policy)]
        for item in engine_arg_items:
            cmd += ["--engine-arg", item]
        for k, v in ablation.engine_args.items():
            cmd += ["--engine-arg", f"{k}={json.dumps(v)}"]
        env = dict(os.environ)
        for k, v in ablation.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        logf = (log_dir / f"{ablation.name}.log") if log_dir else None
        res = run_child(cmd, logf, timeout, env, grace_s)
        if res.timed_out:
            return AblationOutcome(ablation, "skipped", seconds=res.seconds,
                                   error=f"ran past the remaining budget ({timeout:.0f} s)")
        vpath = out / "verdict.json"
        if res.returncode not in (0, 1) or not vpath.is_file():
            text = logf.read_text(errors="replace") if logf and logf.is_file() else ""
            line = error_line(text) if text else "no log kept"
            hint = f" ({GPU_MEMORY_HINT})" if is_gpu_memory_error(text) else ""
            where = f" [log: {logf}]" if logf else ""
            return AblationOutcome(ablation, "error", seconds=res.seconds,
                                   error=f"check exited {res.returncode}: {line}{hint}{where}")
        try:
            v = read_verdict(out)
        except BadInput as exc:
            return AblationOutcome(ablation, "error", seconds=res.seconds,
                                   error=f"check wrote an unusable verdict: {exc.what}")
        return AblationOutcome(ablation, "ran", verdict=v["verdict"], measures=_measures(v), seconds=res.seconds,
                               result_dir=str(out))

    return run_one


def diagnose(*, suite: Path, golden: Path, verdict: Verdict, work_dir: Path,
             engine_args: Sequence[str] = (), budget_s: float = DEFAULT_BUDGET_S, policy: Path | None = None,
             result_dir: Path | None = None, runner: Runner | None = None,
             clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Run the bounded ablations for a failing verdict and return the
    `diagnosis` object. `engine_args` are the check's own --engine-arg items
    (KEY=VALUE strings); each ablation adds the golden's value of its knobs.
    Ablation results go under `work_dir`. Never raises for a failing rerun:
    a rerun that breaks is a finding with status "error" and its real error
    line. The ablations run one after another, each in its own process; the
    caller must have released its own engine first (on a GPU an engine
    takes its gpu_memory_utilization share of the whole card)."""
    plan, fixed = plan_ablations(verdict)
    runner = runner or subprocess_runner(suite, golden, engine_args, policy, log_dir=Path(work_dir) / "logs")
    gpu = _parent_gpu_memory()
    if gpu is not None:
        log.info("diagnosis: GPU memory free before the ablations: %.1f of %.1f GiB", gpu["free_gib"],
                 gpu["total_gib"])
    baseline = _measures(verdict)
    deadline = clock() + budget_s
    outcomes: list[AblationOutcome] = []
    for i, ablation in enumerate(plan):
        left = deadline - clock()
        # "all" adds nothing when one single already restored parity on its own
        if ablation.name == "all" and any(o.verdict == "pass" for o in outcomes):
            continue
        if left < 5:
            outcomes.append(AblationOutcome(ablation, "skipped", error=f"time budget of {budget_s:.0f} s spent"))
            continue
        log.info("diagnosis: ablation %d/%d: %s (%.0f s left)", i + 1, len(plan), ablation.description, left)
        outcomes.append(runner(ablation, Path(work_dir) / f"{i:02d}-{ablation.name}", left))
    start = None
    semantics = None
    if result_dir is not None:
        atol = ((verdict.get("measures") or {}).get("overall") or {}).get("forced", {}) or {}
        tol = (atol.get("tolerance") or {}).get("atol", 1e-4)
        try:
            start = drift_start(golden, result_dir, tol)
        except BadInput as exc:  # the traces are optional evidence
            log.warning("diagnosis: drift start not computed: %s", exc.what)
        semantics = semantics_sentence((verdict.get("measures") or {}).get("per_config") or {})
    out = summarize(baseline, outcomes, fixed, start, semantics, budget_s)
    out["gpu_memory_before"] = gpu
    return out


def diagnose_result_dir(suite: Path, golden: Path, result_dir: Path, engine_args: Sequence[str] = (),
                        budget_s: float = DEFAULT_BUDGET_S, policy: Path | None = None,
                        runner: Runner | None = None) -> dict[str, Any]:
    """For `check --diagnose`: read RESULT/verdict.json, run the ablations
    (outputs in RESULT/diagnosis/), write the diagnosis back into
    verdict.json and re-render the reports. Returns the diagnosis."""
    result_dir = Path(result_dir)
    verdict = read_verdict(result_dir)
    work = result_dir / ABLATION_DIR
    if work.exists():
        shutil.rmtree(work)
    diagnosis = diagnose(suite=suite, golden=golden, verdict=verdict, work_dir=work, engine_args=engine_args,
                         budget_s=budget_s, policy=policy, result_dir=result_dir, runner=runner)
    verdict["diagnosis"] = diagnosis
    write_verdict(result_dir, verdict)
    render_result(result_dir)
    atomic_write_text(work / "diagnosis.json", json.dumps(diagnosis, indent=1, default=str) + "\n")
    return diagnosis


# ---------------------------------------------------------------- CLI (parity-gate diagnose)
def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", required=True, type=Path, help="suite YAML the check ran")
    parser.add_argument("--golden", required=True, type=Path, help="golden folder the check used")
    parser.add_argument("--result", required=True, type=Path, help="result folder of the failing check")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="the check's own --engine-arg overrides (repeat them here)")
    parser.add_argument("--policy", type=Path, help="the check's --policy, if any")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help=f"time budget for all ablations, seconds (default {DEFAULT_BUDGET_S:.0f})")


def run(args: argparse.Namespace) -> int:
    d = diagnose_result_dir(args.suite, args.golden, args.result, args.engine_arg, args.budget, args.policy)
    print(f"diagnosis: {d['summary']}")
    for f in d["findings"]:
        print(f"  {'RESTORES' if f['restores_parity'] else 'no      '} {f['cause']}: {f['detail']}")
    print(f"  written into {Path(args.result) / 'verdict.json'}")
    return 0
