"""The verdict: checks + measures + environment diff, as the documented
`verdict.json` (docs/verdict.md, gate/schemas/verdict.schema.json). Pure."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, cast

from gate.core.checks import CheckResult
from gate.core.compare import ComparisonResult
from gate.core.engine_args import engine_check
from gate.core.errors import EXIT_PASS, EXIT_REGRESSION, BadInput
from gate.core.fsutil import NotRegularFile, TooLarge, atomic_write_text, read_regular
from gate.core.jsonpath import first_invalid_text
from gate.core.measures import short as _fmt
from gate.core.rows import CheckRow, ConfigOutcome, EnvRow, Verdict
from gate.core.thresholds import Policy
from gate.core.trace import Manifest
from gate.core.update_rows import WeightUpdateResult

__all__ = ["build_verdict", "add_update_paths", "environment_diff", "write_verdict", "read_verdict", "text_summary",
           "VERDICT_FILE"]

VERDICT_FILE = "verdict.json"
SCHEMA = "parity-gate/verdict"
VERSION = 1
_ENV_KEYS = ("vllm_version", "vllm_commit", "torch_version", "transformers_version", "tokenizers_version",
             "sampler_backend", "flashinfer_version", "triton_version", "cuda_version", "device_name",
             "driver_version", "python_version", "platform")
# Tensor and pipeline parallelism split each matmul or layer stack across
# cards: other reduction orders, other numerics. Data parallelism changes
# which requests share a batch.
_HARDWARE = ("device_name", "driver_version", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def _row(key: str, group: str, ref: dict[str, Any], cand: dict[str, Any], name: str | None = None) -> EnvRow:
    """A key one side does not record at all (a trainer or transformers run has
    no scheduler) is listed but not counted as a change."""
    name = name or key
    both = key in ref and key in cand
    return {"key": name, "group": group, "reference": ref.get(key), "candidate": cand.get(key),
            "differs": both and ref.get(key) != cand.get(key),
            **({} if both else {"recorded_by": "reference" if key in ref else "candidate"})}


def environment_diff(ref: Manifest, cand: Manifest) -> list[EnvRow]:
    """Every environment and resolved engine key, marked where it moved.
    Config differences are always listed, even when nothing drifted."""
    rows: list[EnvRow] = []
    re_, ce = ref.environment or {}, cand.environment or {}
    for key in _ENV_KEYS:
        if key in re_ or key in ce:
            rows.append(_row(key, "environment", re_, ce))
    renv, cenv = re_.get("env"), ce.get("env")
    if renv is not None and cenv is not None:  # both sides recorded their variables: absence is a change
        for key in sorted(set(renv) | set(cenv)):
            rows.append({"key": f"env.{key}", "group": "environment", "reference": renv.get(key),
                         "candidate": cenv.get(key), "differs": renv.get(key) != cenv.get(key)})
    rr = (ref.engine_args or {}).get("resolved") or {}
    cr = (cand.engine_args or {}).get("resolved") or {}
    for key in sorted(set(rr) | set(cr)):
        rows.append(_row(key, "engine", rr, cr))
    rq = (ref.engine_args or {}).get("requested") or {}
    cq = (cand.engine_args or {}).get("requested") or {}
    for key in sorted(set(rq) | set(cq)):
        if key not in rr and key not in cr:
            rows.append({"key": key, "group": "engine (requested)", "reference": rq.get(key),
                         "candidate": cq.get(key), "differs": rq.get(key) != cq.get(key)})
    return rows


def _hardware_warnings(diff: list[EnvRow]) -> list[str]:
    moved = [r for r in diff if r["key"] in _HARDWARE and r["differs"]]
    if not moved:
        return []
    what = ", ".join(f"{r['key']} {r['reference']!r} -> {r['candidate']!r}" for r in moved)
    return [f"golden and run were made on different hardware or parallel layout ({what}); compared anyway, so "
            f"drift may be the hardware's or the layout's, not the version's"]


def config_status(config: str, checks: list[CheckResult], group: dict[str, Any],
                  mode: str = "check") -> ConfigOutcome:
    """Per sampling config: 'fail', 'inconclusive' or 'pass', and why, in words.

    A config passes only on evidence: its teacher-forced channel (the gate's
    sharpest instrument) must be comparable wherever the reference has one
    (in `compare`, a candidate with no teacher-forced scores at all, such as
    a trainer dump, is exempt and said so), and a sampler channel that the
    free runs could not match (a changed seeded random stream) must be
    vouched for by the in-run semantics check."""
    mine = [c for c in checks if c.config == config]
    by_channel: dict[str, list[CheckResult]] = {}
    for c in mine:
        by_channel.setdefault(c.channel, []).append(c)
    lost = {ch: cs[0] for ch, cs in by_channel.items() if all(c.status == "not_comparable" for c in cs)}
    notes = [f"{_CHANNEL_WORDS[ch]} not comparable for '{config}': {c.evidence.get('compared')} of "
             f"{c.evidence.get('reference')} {c.evidence.get('unit', 'tokens')}; {c.note}" for ch, c in lost.items()]
    sem = group.get("semantics") or {}
    if "sampler" in lost and "semantics" in by_channel and "semantics" not in lost:
        notes[list(lost).index("sampler")] += (f"; semantics checked in-run instead: {sem.get('reference_mode')} -> "
                                               f"{sem.get('candidate_mode')}")
    if any(c.status == "fail" for c in mine):
        status, why = "fail", "a check failed"
    elif not mine or all(c.status == "not_comparable" for c in mine):
        status, why = "inconclusive", "no check had enough evidence"
    elif "forced" in lost and (mode == "check" or (group.get("forced") or {}).get("candidate_records")):
        # `check` produces its own teacher-forced scores: missing ones are never fine. In `compare`
        # a candidate that records no teacher-forced scores at all (a trainer dump) is said, not failed.
        status, why = "inconclusive", "the teacher-forced channel had too little evidence"
    elif "sampler" in lost and (group.get("free_run") or {}).get("sequences") and \
            ("semantics" not in by_channel or "semantics" in lost):
        status, why = "inconclusive", "the sampler channel had too little evidence and no in-run semantics"
    else:
        status, why = "pass", "every gated channel passed" + (" (some on in-run evidence)" if lost else "")
    return {"status": status, "reason": why, "notes": notes,
            "checks": {"pass": sum(c.status == "pass" for c in mine), "fail": sum(c.status == "fail" for c in mine),
                       "not_comparable": sum(c.status == "not_comparable" for c in mine)}}


_CHANNEL_WORDS = {"forced": "teacher-forced channel", "sampler": "sampler channel", "free_run": "free-run check",
                  "semantics": "in-run semantics"}


def _headline(checks: list[CheckResult], result: ComparisonResult, configs: dict[str, ConfigOutcome]) -> str:
    failed = [c for c in checks if c.status == "fail"]
    counted = [c for c in checks if c.status != "not_comparable"]
    skipped = len(checks) - len(counted)
    forced = (result.overall.get("forced") or {})
    sampler = (result.overall.get("sampler") or {})
    tokens = (forced.get("tokens") or 0) + (sampler.get("tokens") or 0)
    gaps = f", {skipped} not comparable" if skipped else ""
    if failed:
        parts = [f"{c.title}{f' [{c.config}]' if c.config else ''} ({c.measure} {_fmt(c.value)} vs "
                 f"{c.op} {_fmt(c.bound)})" for c in failed[:4]]
        more = f", and {len(failed) - 4} more" if len(failed) > 4 else ""
        return f"FAIL: {len(failed)} of {len(counted)} checks failed{gaps}: " + ", ".join(parts) + more
    stuck = [name for name, c in configs.items() if c["status"] == "inconclusive"]
    if not checks or not configs:
        return f"INCONCLUSIVE: nothing was compared ({result.records} records matched)"
    if stuck:
        why = "; ".join(f"'{n}': {configs[n]['reason']}" for n in stuck[:3])
        return (f"INCONCLUSIVE: not enough evidence to pass {len(stuck)} of {len(configs)} configs ({why}); "
                f"{len(counted) - len(failed)} checks passed{gaps}")
    mx = max((x.get("max_abs_diff") or 0.0) for x in (forced, sampler))
    return (f"PASS: all {len(counted)} comparable checks passed{gaps} ({tokens} tokens in {result.records} "
            f"sequences; max abs diff {_fmt(mx)})")


def build_verdict(*, mode: str, reference: tuple[str, str, Manifest], candidate: tuple[str, str, Manifest],
                  result: ComparisonResult, checks: list[CheckResult], policy: Policy,
                  prompts_new: list[str], prompts_unused: list[str], warnings: list[str],
                  reproduce: str, files: dict[str, str]) -> Verdict:
    diff = environment_diff(reference[2], candidate[2])
    configs = {name: config_status(name, checks, group, mode) for name, group in result.per_config.items()}
    engine, engine_warnings = engine_check(policy, candidate[2], candidate[0])
    if engine is not None:
        checks = [*checks, engine]
    if any(c["status"] == "fail" for c in configs.values()) or any(
            c.status == "fail" and c.config is None for c in checks):
        verdict = "fail"
    elif not configs or any(c["status"] == "inconclusive" for c in configs.values()):
        verdict = "inconclusive"  # never a pass on missing evidence
    else:
        verdict = "pass"
    exit_code = EXIT_REGRESSION if verdict != "pass" and policy.fail_on == "regression" else EXIT_PASS
    all_warnings = _hardware_warnings(diff) + engine_warnings + list(warnings) + list(result.warnings)
    if result.only_reference:
        all_warnings.append(f"{len(result.only_reference)} reference records have no counterpart in the run "
                            f"(first: {result.only_reference[0]})")
    if result.only_candidate:
        all_warnings.append(f"{len(result.only_candidate)} run records have no counterpart in the reference "
                            f"(first: {result.only_candidate[0]})")
    if result.per_prompt_omitted:
        all_warnings.append(f"per-prompt table keeps the {len(result.per_prompt)} largest drifts; "
                            f"{result.per_prompt_omitted} rows omitted")
    return {
        "schema": SCHEMA, "version": VERSION, "verdict": verdict, "exit_code": exit_code, "mode": mode,
        "fail_on": policy.fail_on,
        "headline": _headline(checks, result, configs),
        "reference": {"label": reference[0], "dir": reference[1], "manifest": reference[2].to_json()},
        "candidate": {"label": candidate[0], "dir": candidate[1], "manifest": candidate[2].to_json()},
        "environment_diff": diff,
        "warnings": all_warnings,
        "configs": configs,
        "evidence_notes": [n for c in configs.values() for n in c["notes"]],
        "checks": [cast(CheckRow, dataclasses.asdict(c)) for c in checks],
        "measures": {"overall": result.overall, "per_config": result.per_config},
        "worst_tokens": result.worst_tokens,
        "by_position": result.by_position,
        "histogram": result.histogram,
        "per_prompt": result.per_prompt,
        "sampler_matched": result.sampler_matched,
        "prompts": {"new": prompts_new, "unused": prompts_unused},
        "diagnosis": None,
        "reproduce": reproduce,
        "files": files,
    }


def add_update_paths(verdict: Verdict, update: WeightUpdateResult) -> Verdict:
    """The suite's declared weight-update paths (docs/weight-update.md), run
    after the comparison: one check per path (channel `weight_update`, over
    all configs), failing the verdict with its cause when a path fails. A
    path passes only on evidence: each of its checks compared tokens.
    `update` is what `parity-gate weight-update` writes (weight_update.json)."""
    checks = []
    for p in update.get("paths") or []:
        sub = p.get("checks") or []
        tokens = sum(int(c.get("tokens_compared") or 0) for c in sub)
        failed = [c for c in sub if c.get("status") != "pass"]
        status = "fail" if failed or p.get("verdict") != "pass" or not tokens else "pass"
        worst = max((float(c.get("max_abs_diff") or 0.0) for c in sub), default=0.0)
        st = p.get("staleness") or {}
        if status == "pass":
            message = (f"update path {p['name']}: {len(sub)} checks pass against fresh engines on the old and new "
                       f"weights ({tokens} tokens compared)")
        elif not tokens:
            message = f"update path {p['name']}: no token was compared; nothing passes on zero evidence"
        else:
            cause = (p.get("diagnosis") or {}).get("summary") or (failed[0]["detail"] if failed else "failed")
            message = f"update path {p['name']} fails: {cause}"
        note = (f"in-flight staleness after the switch: max abs diff {_fmt(st.get('after_switch_max_abs_diff'))}, "
                f"k3 {_fmt(st.get('after_switch_k3'))}" + ("" if st.get("expected", True) else " (must be 0)")
                if st else None)
        checks.append({
            "id": f"weight_update.{p['name']}", "title": f"update path {p['name']}", "channel": "weight_update",
            "config": None, "status": status, "measure": "max_abs_diff vs fresh engines", "value": worst, "op": "<=",
            "bound": float(update.get("tolerance") or 0.0), "n_bad": len(failed), "n_total": len(sub),
            "worst": None, "message": message, "evidence": {"compared": tokens, "unit": "tokens"}, "note": note})
    out = dict(verdict)
    out["checks"] = [*verdict["checks"], *checks]
    out["weight_update"] = {k: update.get(k) for k in ("headline", "verdict", "vllm_version", "tolerance", "switch_at",
                                                        "max_tokens", "reference", "seconds")}
    out["weight_update"]["paths"] = [{k: p.get(k) for k in ("name", "path", "verdict", "checks", "diagnosis",
                                                            "mechanism", "staleness")}
                                     for p in update.get("paths") or []]
    bad = [c for c in checks if c["status"] == "fail"]
    if bad:
        out["verdict"] = "fail"
        out["exit_code"] = EXIT_REGRESSION if verdict.get("fail_on", "regression") == "regression" else EXIT_PASS
        causes = "; ".join(c["message"] for c in bad[:2]) + (f"; and {len(bad) - 2} more" if len(bad) > 2 else "")
        out["headline"] = (f"FAIL: {len(bad)} of {len(checks)} weight-update paths: {causes}"
                           if verdict["verdict"] == "pass" else f"{verdict['headline']}; and {causes}")
    elif checks:
        tokens = sum(c["evidence"]["compared"] for c in checks)
        out["headline"] = (f"{verdict['headline']}; {len(checks)} weight-update paths match fresh engines "
                           f"({tokens} tokens)")
    return out


def _finite(obj: Any) -> Any:
    """JSON has no infinities: they are written as the strings "Infinity" and
    "-Infinity" (a -inf logprob is legal: a token outside a processed top-k)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if obj != obj:
            raise ValueError("NaN in verdict")
        return "Infinity" if obj > 0 else "-Infinity"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_verdict(out: Path, verdict: Verdict) -> Path:
    path = Path(out) / VERDICT_FILE
    atomic_write_text(path, json.dumps(_finite(verdict), indent=1, allow_nan=False) + "\n")
    return path


_MAX_DEPTH = 64  # a real verdict nests about 8 deep; rendering walks values recursively
_MAX_BYTES = 256 << 20  # a real one is a few MB: it keeps at most a few hundred rows of each table


def read_verdict(result_dir: Path) -> Verdict:
    """Read RESULT_DIR/verdict.json and check it against
    gate/schemas/verdict.schema.json; BadInput (one line) if not usable.
    Only a regular file is read (a FIFO would block forever, a device never
    ends), and at most _MAX_BYTES of it."""
    path = Path(result_dir) / VERDICT_FILE
    hint = "run 'parity-gate check' or 'parity-gate compare' with --out pointing at this directory"
    try:
        text = read_regular(path, _MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no verdict.json in this result directory", hint) from None
    except NotRegularFile as exc:
        raise BadInput(f"{path}: {exc}", "pass the folder that 'parity-gate check' or 'compare' wrote") from None
    except TooLarge as exc:
        raise BadInput(f"{path}: {exc} for a verdict", "pass the verdict.json that 'parity-gate check' or "
                       "'compare' wrote (a few MB at most)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}", "check the file's permissions and encoding") from None
    try:
        verdict = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", hint) from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number; nesting deeper than Python's stack
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise BadInput(f"{path}: not a usable JSON document ({why})", hint) from None
    _validate(verdict, path, hint)
    return verdict


def _validate(v: Any, path: Path, hint: str) -> None:
    """The model (gate/core/models.py) decides what a verdict is (it evolves
    with the verdict); the two checks before it only give the common mistakes their
    own message and hint."""
    if not isinstance(v, dict) or v.get("schema") != SCHEMA:
        raise BadInput(f"{path}: not a parity-gate verdict (expected \"schema\": \"{SCHEMA}\")", hint)
    if type(v.get("version")) is not int or v.get("version") != VERSION:
        raise BadInput(f"{path}: verdict schema version {v.get('version')!r} is not supported (this gate reads "
                       f"{VERSION})", "re-run check/compare with this version of parity-gate, or upgrade parity-gate")
    from gate.core.models import Verdict  # pydantic: only when a verdict is read
    from gate.core.validation import problem
    wrong = problem(Verdict, v, "verdict")
    if wrong is None and _deeper_than(v, _MAX_DEPTH):
        wrong = f"verdict nests more than {_MAX_DEPTH} levels deep"
    if wrong is None:
        bad = first_invalid_text(v, "verdict")
        wrong = bad and f"{bad} is not valid Unicode (a lone surrogate escape such as \\ud800)"
    if wrong:
        raise BadInput(f"{path}: {wrong} (see gate/schemas/verdict.schema.json)",
                       "regenerate it with 'parity-gate check' or 'compare'; a hand-edited verdict must keep the "
                       "documented types")


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((x, depth + 1) for x in item.values())
        elif isinstance(item, list):
            stack.extend((x, depth + 1) for x in item)
    return False


def text_summary(verdict: Verdict, out: Path) -> str:
    """The short plain-text summary printed on stdout."""
    lines = [verdict["headline"]]
    for c in verdict["checks"]:
        if c["status"] == "fail":
            lines.append("  " + c["message"])
    n_pass = sum(c["status"] == "pass" for c in verdict["checks"])
    if n_pass:
        lines.append(f"  {n_pass} checks passed")
    for note in verdict.get("evidence_notes") or []:
        lines.append(f"  not comparable: {note}")
    moved = [r for r in verdict["environment_diff"] if r["differs"]]
    for r in moved:
        lines.append(f"  changed: {r['key']}: {r['reference']!r} -> {r['candidate']!r}")
    for w in verdict["warnings"]:
        lines.append(f"  warning: {w}")
    p = verdict["prompts"]
    if p["new"]:
        ref_suite = ((verdict["reference"].get("manifest") or {}).get("suite") or {}).get("name")
        cand_suite = ((verdict["candidate"].get("manifest") or {}).get("suite") or {}).get("name")
        how = ("'parity-gate record --update' into this golden" if ref_suite == cand_suite else
               f"'parity-gate record' into a new folder: this golden belongs to suite {ref_suite!r}")
        lines.append(f"  {len(p['new'])} new prompts/configs not in the golden (record them with {how}): "
                     f"{', '.join(p['new'][:5])}")
    if p["unused"]:
        lines.append(f"  {len(p['unused'])} golden prompts/configs no longer in the suite: {', '.join(p['unused'][:5])}")
    lines.append(f"  results: {out}")
    lines.append(f"  reproduce: {verdict['reproduce']}")
    return "\n".join(lines)
