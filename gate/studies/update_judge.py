"""Judging one in-flight weight-update path (docs/weight-update.md): pure,
from the outputs the update worker and the fresh worker return. Post-update
requests must equal a fresh engine on the new weights; `wait` requests the
old-weights reference; `abort` returns old partials; `keep` with the cache
cleared continues as the fresh engine does; otherwise the staleness of each
in-flight token is reported, not failed. A greedy request may part from its
reference at a near tie: the token taken one of the reference's best, within
noise of its top (near_tie). A resumed request one token ahead of (or behind)
the fresh continuation lost (or repeated) a token at the resume (resume_shift)."""
from __future__ import annotations

import math

from gate.core.divergence import NEAR_TIE_GAP
from gate.core.update_rows import (
    Agreement,
    Comparison,
    Continuation,
    ContinuationPlan,
    FreshPlan,
    InFlightRequest,
    InFlightRun,
    PathSpec,
    PathVerdict,
    RequestOutput,
    Staleness,
    UpdateCheck,
    UpdateDiagnosis,
)

__all__ = ["judge_path", "continuation_plan", "switch_points", "departure", "agreement", "near_tie", "unexplained",
           "in_flight_at_update", "tie_gap", "resume_shift"]

# Greedy requests that part from their reference at a near tie (near_tie: every token up to and including the
# parting one within atol, and the token taken one of the reference's best, within tie_gap of its top) are
# numerics: on a GPU, bf16 kernels differ with the batch's composition. How many part so is not bounded: on correct
# paths (bf16, a random 0.5B model, 64 requests of 128 tokens, H200) it went from 0.25% of the compared tokens
# (requests after the update) to 1.5% (tokens before the switch), 8 to 43 requests a check, so any count cap either
# false-alarms or is too loose to mean anything (docs/weight-update.md, "Near ties"). Nor need it be a swap of the
# two best: a random model is flat, three or more tokens can lie within noise of the top, and on an H100 a
# swap-only rule failed 1 of 5 partings on two correct paths and at least 1 of 13 on two others. What numerics
# cannot do is what each parting is checked for: move a logprob beyond atol, or pick a token far below the
# reference's top. A stale cache parts every request that reuses a block, at its first token, with logprobs off.


def departure(out: RequestOutput, ref: RequestOutput, atol: float) -> int:
    """The first token where `out` leaves `ref` (another token, or a
    logprob more than atol away); len(out) when it never does."""
    for i, (t, lp) in enumerate(zip(out["token_ids"], out["logprobs"])):
        if i >= len(ref["token_ids"]) or t != ref["token_ids"][i] or abs(lp - ref["logprobs"][i]) > atol:
            return i
    return len(out["token_ids"])


def switch_points(run: InFlightRun, pause: str, old: list[RequestOutput], atol: float) -> list[int]:
    """Per in-flight request, the number of its tokens produced under the
    old weights: what the client had at the update when generation was
    frozen (`keep`), else where it left the old-weights reference."""
    outs = run["outputs"]
    if pause == "keep":
        return [min(n, len(o["token_ids"])) for n, o in zip(run["seen_at_update"], outs)]
    return [departure(o, r, atol) for o, r in zip(outs, old)]


def continuation_plan(run: InFlightRun, pause: str, old: list[RequestOutput], atol: float) -> ContinuationPlan:
    """What the fresh engine on the new weights runs for one path: it
    continues each in-flight request that went on after the update from the
    tokens it had before it (decode, like the run), and scores every token
    those requests returned (the trainer's view)."""
    if pause not in ("keep", "none"):
        return {"continue": [], "score": []}
    plan: list[Continuation] = []
    for i, (s, o) in enumerate(zip(switch_points(run, pause, old, atol), run["outputs"])):
        if s < len(o["token_ids"]):
            plan.append({"request": i, "prefix": list(o["token_ids"][:s])})
    return {"continue": plan, "score": [list(o["token_ids"]) for o in run["outputs"]]}


def _cmp(out: RequestOutput, ref: RequestOutput) -> Comparison:
    """Tokens and logprobs of `out` against `ref`, over their common prefix."""
    n = 0
    diffs = []
    for t, lp, rt, rlp in zip(out["token_ids"], out["logprobs"], ref["token_ids"], ref["logprobs"]):
        if t != rt:
            break
        diffs.append(abs(lp - rlp))
        n += 1
    same_len = len(out["token_ids"]) == len(ref["token_ids"])
    return {"tokens_equal": n == len(ref["token_ids"]) and same_len, "matching_tokens": n,
            "tokens": len(out["token_ids"]), "reference_tokens": len(ref["token_ids"]),
            "max_abs_diff": max(diffs) if diffs else 0.0, "diffs": diffs}


def tie_gap(atol: float) -> float:
    """How close the reference's two best tokens must be for a parting to count as a near tie: NEAR_TIE_GAP, or
    twice the tolerance when larger (noise of up to atol on each of the two can swap them). In bf16 a logit's
    spacing near 4 is 0.03: on an H200 (atol 0.05), 4 of 17 partings of a correct path were not near ties at
    0.01 (docs/weight-update.md, "Near ties")."""
    return max(NEAR_TIE_GAP, 2 * atol)


def unexplained(c: Comparison, out: RequestOutput, ref: RequestOutput, atol: float) -> str | None:
    """Why `out` does not agree with `ref` within what numerics explain, or None when it does (equal within atol,
    or parted at a near tie). A near tie: the tokens before the parting within atol, the parting token's logprob
    within atol of the reference's (greedy: both are the top logprob, so the distributions agree there too), and
    the token taken one of the reference's best, less than tie_gap(atol) below its top (two or more tokens that
    close can trade places under noise; a lost or repeated token, or stale KV, takes another one). A reference
    without alternatives (an output recorded before they were) is judged on its top-2 gap and the logprobs."""
    pos = c["matching_tokens"]
    if c["max_abs_diff"] > atol:
        at = c["diffs"].index(c["max_abs_diff"])
        return f"logprob {c['max_abs_diff']:.3g} from the reference at token {at} (tolerance {atol:g})"
    if c["tokens_equal"]:
        return None
    if pos >= len(out["token_ids"]) or pos >= len(ref["token_ids"]):
        return f"{len(out['token_ids'])} tokens against the reference's {len(ref['token_ids'])}"
    gaps, alts, tie = ref.get("top2_gap") or [], ref.get("alternatives"), tie_gap(atol)
    gap = gaps[pos] if pos < len(gaps) else None
    if gap is None:
        return f"parted at token {pos}, where the reference's top-2 gap is not known"
    if gap >= tie:
        return (f"parted at token {pos}, where the reference's two best tokens are {gap:.3g} apart "
                f"(a near tie: < {tie:g})")
    moved = abs(out["logprobs"][pos] - ref["logprobs"][pos])
    if moved > atol:
        return f"parted at token {pos} with its logprob {moved:.3g} from the reference's (tolerance {atol:g})"
    if alts is not None:
        took = out["token_ids"][pos]
        near = dict(alts[pos] if pos < len(alts) else [])
        if took not in near:
            return (f"parted at token {pos} to token {took}, not among the reference's {len(near) + 1} best there "
                    "(a lost or repeated token, or KV read from other weights)")
        below = ref["logprobs"][pos] - near[took]
        if below >= tie:
            return (f"parted at token {pos} to token {took}, {below:.3g} below the reference's best there "
                    f"(a near tie: < {tie:g})")
    return None


# How many tokens a resumed request must follow the fresh continuation shifted by one to count as a lost (or
# repeated) token at the resume rather than a parting: two unrelated greedy streams agree on four tokens in a row
# by chance about never, and a near tie inside the window only makes the shift go unnamed (the check fails anyway).
SHIFT_RUN = 4


def resume_shift(tail: RequestOutput, ref: RequestOutput, atol: float) -> int:
    """How a resumed request's tokens after the switch sit against the fresh engine's continuation of the same
    prefix: +1 when they are its tokens from the second on (a token lost at the resume: computed, fed to the
    model, not returned), -1 when they are its tokens one place late (a token repeated), 0 otherwise. Counts
    only when the streams part at once and the shifted ones agree, tokens and logprobs within atol, for
    SHIFT_RUN tokens (or to the end, at least two)."""
    a, b = tail["token_ids"], ref["token_ids"]
    if not a or not b or a[0] == b[0]:
        return 0
    for shift, (x, xl, y, yl) in ((1, (a, tail["logprobs"], b[1:], ref["logprobs"][1:])),
                                  (-1, (a[1:], tail["logprobs"][1:], b, ref["logprobs"]))):
        n = min(SHIFT_RUN, len(x), len(y))
        if n >= 2 and x[:n] == y[:n] and all(abs(p - q) <= atol for p, q in zip(xl[:n], yl[:n])):
            return shift
    return 0


def near_tie(c: Comparison, out: RequestOutput, ref: RequestOutput, atol: float) -> bool:
    """A parting explained by numerics (unexplained() says what that takes)."""
    return not c["tokens_equal"] and unexplained(c, out, ref, atol) is None


def agreement(outs: list[RequestOutput], refs: list[RequestOutput], atol: float,
              ids: list[int] | None = None) -> Agreement:
    """Requests against their references: each equal within atol or parted at a near tie. The note counts the
    near ties and names the first requests numerics do not explain, with why (the evidence a failure needs);
    `ids`: the requests' numbers when `outs` is not every request in order."""
    cmps = [_cmp(o, r) for o, r in zip(outs, refs)]
    why = [unexplained(c, o, r, atol) for c, o, r in zip(cmps, outs, refs)]
    ties = [not c["tokens_equal"] and w is None for c, w in zip(cmps, why)]
    bad = [f"request {i}: {w}" for i, w in zip(ids or range(len(why)), why) if w is not None]
    note = (f"; {sum(ties)} parted at a near tie (the token taken one of the reference's best, less than "
            f"{tie_gap(atol):g} below its top; logprobs within tolerance up to and at the parting token)"
            ) if any(ties) else ""
    if bad:
        note += (f"; {len(bad)} not explained by numerics: " + "; ".join(bad[:3])
                 + (f"; and {len(bad) - 3} more" if len(bad) > 3 else ""))
    return {"ok": not bad, "cmps": cmps, "near_ties": sum(ties), "note": note,
            "tokens_compared": sum(c["matching_tokens"] for c in cmps),
            "max_abs_diff": max((c["max_abs_diff"] for c in cmps), default=0.0)}


def in_flight_at_update(run: InFlightRun, pause: str) -> list[bool]:
    """Per request: still generating when the update came. `wait` drains the running requests inside the pause,
    so there it is what the client had seen before asking to pause; otherwise what it had when the update began.
    An aborted request was running by definition."""
    seen = run.get("seen_before_pause") if pause == "wait" else None
    seen = seen or run["seen_at_update"]
    return [o["finish_reason"] == "abort" or n < len(o["token_ids"]) for n, o in zip(seen, run["outputs"])]


def _prefixes(outs: list[RequestOutput], lengths: list[int]) -> list[RequestOutput]:
    """Each output cut to a length (its top-2 gaps and alternatives kept whole: near_tie looks one past the cut)."""
    return [{"token_ids": o["token_ids"][:n], "logprobs": o["logprobs"][:n], "top2_gap": o.get("top2_gap"),
             "alternatives": o.get("alternatives")} for o, n in zip(outs, lengths)]


def _k3(lp: list[float], ref: list[float]) -> float:
    """k3 = E[exp(r) - 1 - r], r = log p_ref - log p_run: the KL estimate an RL
    trainer computes between the rollout's and its own logprobs."""
    vals = [math.exp(b - a) - 1 - (b - a) for a, b in zip(lp, ref)]
    return sum(vals) / len(vals) if vals else 0.0


def judge_path(path: PathSpec, run: InFlightRun, old: list[RequestOutput], fresh: FreshPlan,
               plan: ContinuationPlan, atol: float) -> PathVerdict:
    """One update path: checks (pass/fail with their evidence), a diagnosis
    when one fails, and the staleness of in-flight tokens (reported)."""
    pause, clear = path["pause"], path["clear_cache"]
    checks: list[UpdateCheck] = []
    # requests started after the update: a fresh engine on the new weights
    agree = agreement(run["post"], fresh["post"], atol)
    post, post_ok, worst = agree["cmps"], agree["ok"], agree["max_abs_diff"]
    diverged = [c["matching_tokens"] for c in post if not c["tokens_equal"]]
    gap = (f"{len(diverged)} of {len(post)} requests diverge from it (first at token {min(diverged)}), "
           if diverged else "") + f"logprobs max abs diff {worst:.3g} over matching tokens"
    checks.append({"id": "post_update.equals_fresh_new_weights", "status": "pass" if post_ok else "fail",
                   "tokens_compared": agree["tokens_compared"], "max_abs_diff": worst,
                   "detail": f"requests started after the update against a fresh engine on the new weights: "
                             f"{gap} (tolerance {atol:g}){agree['note']}"})
    diagnosis: UpdateDiagnosis | None = None
    if not post_ok:
        if agreement(run["post"], old, atol)["ok"]:
            summary = (f"the update had no effect: requests after `{run.get('mechanism', path['via'])}` give "
                       "the old weights' outputs, whatever the API reported")
            kind = "no_effect"
        elif not clear:
            summary = ("stale prefix cache: pause_generation(clear_cache=False) (or no reset after the update) "
                       "kept KV blocks computed with the old weights, and requests after the update reuse them "
                       f"(against a fresh engine on the new weights: {gap}); remedy: "
                       "clear_cache=True, or reset_prefix_cache() after the update")
            kind = "stale_prefix_cache"
        else:
            summary = (f"requests after `{run.get('mechanism', path['via'])}` differ from a fresh engine on the "
                       f"new weights ({gap}) although the cache was cleared: the update reached "
                       "only part of the model, or state derived from the old weights (post-processed or "
                       "repacked weights, captured graphs) was not rebuilt")
            kind = "partial_update"
        diagnosis = {"kind": kind, "summary": summary}
    # in-flight requests
    outs = run["outputs"]
    sw = switch_points(run, pause, old, atol)
    requests: list[InFlightRequest] = []
    tails: dict[int, RequestOutput] = {}  # per continued request, its tokens after the switch
    conts = {c["request"]: (c, r) for c, r in zip(plan["continue"], fresh.get("continuations") or [])}
    scores = fresh.get("scores") or []
    for i, (o, ref_old) in enumerate(zip(outs, old)):
        s = sw[i]
        pre = _cmp(*_prefixes([o, ref_old], [s, s]))
        req: InFlightRequest = {
            "request": i, "tokens": len(o["token_ids"]), "finish_reason": o["finish_reason"],
            "seen_at_update": run["seen_at_update"][i], "switched_at": s if s < len(o["token_ids"]) else None,
            "old_weights_tokens": s, "old_prefix_matches_old_reference": pre["tokens_equal"]
            and pre["max_abs_diff"] <= atol, "old_prefix_max_abs_diff": pre["max_abs_diff"]}
        if i in conts:
            c, ref_new = conts[i]
            tail: RequestOutput = {"token_ids": o["token_ids"][s:], "logprobs": o["logprobs"][s:]}
            tails[i] = tail
            cmp_new = _cmp(tail, ref_new)
            req["after_switch"] = {"tokens": len(tail["token_ids"]),
                                   "matching_new_reference": cmp_new["matching_tokens"],
                                   "max_abs_diff": cmp_new["max_abs_diff"], "shift": resume_shift(tail, ref_new, atol)}
        if i < len(scores):
            # per token: under which weights it was produced, and how far its logprob is from the new
            # weights' logprob of the same token in the same context (what the trainer computes)
            req["per_token"] = [{"weights": "old" if t < s else "new", "logprob": round(lp, 6),
                                 "new_weights_logprob": None if ref is None else round(ref, 6),
                                 "abs_diff": None if ref is None else round(abs(lp - ref), 6)}
                                for t, (lp, ref) in enumerate(zip(o["logprobs"], scores[i]))]
        requests.append(req)
    if pause == "wait":
        waited = agreement(outs, old, atol)
        ok = waited["ok"]
        checks.append({"id": "in_flight.wait_finishes_on_old_weights", "status": "pass" if ok else "fail",
                       "tokens_compared": waited["tokens_compared"], "max_abs_diff": waited["max_abs_diff"],
                       "detail": ("every in-flight request finished entirely under the old weights" if ok else
                                  "an in-flight request left the old-weights reference: pause_generation('wait') "
                                  "let it see the new weights") + waited["note"]})
    elif pause == "abort":
        # a request still running at the pause comes back aborted with what it had; one that had finished comes
        # back whole; either way every token is the old weights' (a request that finished short lost tokens)
        aborted = sum(o["finish_reason"] == "abort" for o in outs)
        lost = [i for i, (o, r) in enumerate(zip(outs, old))
                if o["finish_reason"] != "abort" and len(o["token_ids"]) < len(r["token_ids"])]
        partial = agreement(outs, _prefixes(old, [len(o["token_ids"]) for o in outs]), atol)
        ok = partial["ok"] and not lost
        checks.append({"id": "in_flight.abort_returns_old_partials", "status": "pass" if ok else "fail",
                       "tokens_compared": partial["tokens_compared"], "max_abs_diff": partial["max_abs_diff"],
                       "detail": f"{aborted} of {len(outs)} in-flight requests returned as aborted, the others "
                                 f"whole, with {sum(len(o['token_ids']) for o in outs)} tokens, "
                                 + ("all equal to the old-weights reference" if partial["ok"] else
                                    "some NOT equal to the old-weights reference")
                                 + (f"; {len(lost)} finished short of the reference (tokens lost)" if lost else "")
                                 + partial["note"]})
    else:
        cut = [r["old_weights_tokens"] for r in requests]
        pre = agreement(_prefixes(outs, cut), _prefixes(old, cut), atol)
        checks.append({"id": "in_flight.tokens_before_the_switch_are_old", "status": "pass" if pre["ok"] else "fail",
                       "tokens_compared": pre["tokens_compared"], "max_abs_diff": pre["max_abs_diff"],
                       "detail": ("tokens produced before the update equal the old-weights reference" if pre["ok"]
                                  else "a token produced before the update differs from the old-weights reference")
                       + pre["note"]})
        # keep and none promise that requests go on across the update: one that ended at it lost its continuation
        # (sleep() defaults to mode 'abort' and ends the requests a keep pause froze)
        ended = [(o, r) for o, r in zip(outs, old) if len(o["token_ids"]) < len(r["token_ids"])]
        why = sorted({o["finish_reason"] for o, _ in ended})
        which = "frozen" if pause == "keep" else "running"
        checks.append({"id": "in_flight.requests_continue_across_update", "status": "fail" if ended else "pass",
                       "tokens_compared": sum(len(o["token_ids"]) for o in outs),
                       "detail": (f"every {which} request went on after the update and ran to its length" if not ended
                                  else f"{len(ended)} of {len(outs)} {which} requests ended at the update instead of "
                                       f"going on (finish reason {', '.join(why)}; "
                                       f"{sum(len(o['token_ids']) for o, _ in ended)} of "
                                       f"{sum(len(r['token_ids']) for _, r in ended)} tokens): "
                                       f"`{run.get('mechanism', path['via'])}` ended them")})
        if pause == "keep" and clear:
            order = sorted(conts)
            resumed = agreement([tails[i] for i in order], [conts[i][1] for i in order], atol, ids=order)
            ok = resumed["ok"]
            shift = [] if ok else [requests[i]["after_switch"]["shift"] for i in order]
            lost, repeated = shift.count(1), shift.count(-1)
            named = "".join(
                f"; {n} of {len(order)} resumed requests run one token {where} the fresh engine's continuation "
                f"(their first tokens are its tokens {span}, logprobs within tolerance): {what}"
                for n, where, span, what in (
                    (lost, "ahead of", "from the second on", "a token lost at the resume"),
                    (repeated, "behind", "one place late", "a token repeated at the resume")) if n)
            checks.append({"id": "in_flight.keep_cleared_resumes_on_new_weights", "status": "pass" if ok else "fail",
                           "tokens_compared": resumed["tokens_compared"], "max_abs_diff": resumed["max_abs_diff"],
                           "detail": ("after resume, every frozen request continues as a fresh engine on the "
                                      "new weights continues the same tokens" if ok else
                                      "after resume, a frozen request does not continue as a fresh engine on the new "
                                      "weights does (KV not recomputed, or a token lost or repeated at the resume; "
                                      "token numbers below count from the switch)")
                           + named + resumed["note"]})
            if (lost or repeated) and diagnosis is None:
                diagnosis = {"kind": "token_lost_at_resume" if lost >= repeated else "token_repeated_at_resume",
                             "summary": (
                                 f"after `pause_generation(mode='keep')` with the cache cleared, {max(lost, repeated)} "
                                 f"of {len(order)} resumed requests "
                                 + ("lost their first token after the resume: it was computed and fed to the "
                                    "model but not returned, so the rollout's tokens and the logprobs the engine "
                                    "reports no longer match (the trainer scores a sequence the engine did not "
                                    "see). vLLM's async scheduler did this up to 0.21 (vLLM issue 42043, fixed in "
                                    "0.22.0 by PR 42117); remedy: upgrade vLLM, or async_scheduling=False"
                                    if lost >= repeated else
                                    "returned a token twice at the resume, so the rollout's tokens and the "
                                    "logprobs the engine reports no longer match; an async-scheduling token in "
                                    "flight at the pause delivered after the request was recomputed; remedy: "
                                    "async_scheduling=False, and report it to vLLM"))}
    staleness: Staleness | None = None
    if scores:
        new = [(p["logprob"], p["new_weights_logprob"]) for r in requests for p in r.get("per_token") or []
               if p["weights"] == "new" and p["new_weights_logprob"] is not None]
        every = [(p["logprob"], p["new_weights_logprob"]) for r in requests for p in r.get("per_token") or []
                 if p["new_weights_logprob"] is not None]
        staleness = {
            "tokens_old_weights": sum(r["old_weights_tokens"] for r in requests),
            "tokens_new_weights": len(new),
            "after_switch_max_abs_diff": max((abs(a - b) for a, b in new), default=0.0),
            "after_switch_mean_abs_diff": (sum(abs(a - b) for a, b in new) / len(new)) if new else 0.0,
            "after_switch_k3": _k3([a for a, _ in new], [b for _, b in new]),
            "rollout_k3": _k3([a for a, _ in every], [b for _, b in every]),
            "expected": not (pause == "keep" and clear)}
    running = in_flight_at_update(run, pause)
    if any(running):  # its evidence: the tokens of the requests that were in flight
        checks.append({"id": "in_flight.requests_in_flight_at_update", "status": "pass",
                       "tokens_compared": sum(len(o["token_ids"]) for o, r in zip(outs, running) if r),
                       "detail": f"{sum(running)} of {len(outs)} requests were generating when the update came"})
    else:
        checks.append({"id": "in_flight.requests_in_flight_at_update", "status": "fail", "tokens_compared": 0,
                       "detail": f"no request was in flight at the update: all {len(outs)} had finished "
                                 f"({max((len(o['token_ids']) for o in outs), default=0)} tokens) before it came, so "
                                 f"the {pause!r} path was not exercised; the engine ran ahead of the client: raise "
                                 "--max-tokens (weight_update.max_tokens) or lower --switch-at"})
    for c in checks:  # nothing passes on zero evidence
        if c["status"] == "pass" and not c["tokens_compared"]:
            c["status"] = "fail"
            c["detail"] += "; but no token was compared: nothing passes on zero evidence"
    failed = [c for c in checks if c["status"] == "fail"]
    if failed and diagnosis is None:
        idle = [c for c in failed if c["id"] == "in_flight.requests_in_flight_at_update"]
        diagnosis = ({"kind": "not_in_flight", "summary": idle[0]["detail"]} if idle else
                     {"kind": "in_flight", "summary": failed[0]["detail"]})
    return {"path": path, "verdict": "fail" if failed else "pass", "checks": checks, "diagnosis": diagnosis,
            "mechanism": run.get("mechanism"), "update_seconds": run.get("update_seconds"),
            "in_flight": requests, "staleness": staleness}
