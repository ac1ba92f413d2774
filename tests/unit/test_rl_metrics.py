"""Trainer-side measures: importance ratios between rollout and trainer logprobs."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from gate.core.rl_metrics import measure_records, summary_line
from gate.core.trace import Record, Scores
from tests._util import manifest, run_cli, write_trace


def _rec(lps, path, key="p", comp=(5, 6, 7, 8)):
    return Record(config="c", prompt_id=key, sample=0, prompt_token_ids=[1, 2], completion_token_ids=list(comp),
                  sampler=Scores(path, lps))


def test_measure__ratios_clip_and_tis_truncation():
    rollout = [_rec([-1.0, -2.0, -0.5, -3.0], "decode")]
    # log ratios: 0, +1 (rho e ~2.72, truncated), -0.1, +0.1
    trainer = [_rec([-1.0, -1.0, -0.6, -2.9], "hf")]
    m = measure_records(rollout, trainer)
    assert m["tokens"] == 4 and m["view"] == "trainer" and m["paths"] == {"reference": "decode", "candidate": "hf"}
    assert math.isclose(m["tis_truncated_fraction"], 0.25)
    assert math.isclose(m["clip_fraction"], 0.25)
    assert math.isclose(m["ratio"]["max"], math.exp(1.0), rel_tol=1e-9)
    assert math.isclose(m["ratio"]["min"], math.exp(-0.1), rel_tol=1e-6)
    d = [0.0, 1.0, -0.1, 0.1]
    assert math.isclose(m["k3_kl"], sum(math.exp(x) - 1 - x for x in d) / 4, rel_tol=1e-9)
    assert math.isclose(m["mult_prob_error"], sum(math.exp(abs(x)) for x in d) / 4, rel_tol=1e-9)
    assert math.isclose(m["tis_mean_weight"], (1 + 2 + math.exp(-0.1) + math.exp(0.1)) / 4, rel_tol=1e-9)
    assert sum(b["count"] for b in m["ratio_histogram_log2"]) == 4
    assert "truncated at C=2: 25.00%" in summary_line(m)


def test_measure__none_without_a_trainer_side_or_with_other_tokens():
    # two engine runs get the versions view instead (below)
    assert measure_records([_rec([-1.0] * 4, "decode")], [_rec([-1.0] * 4, "decode")])["view"] == "versions"
    assert measure_records([_rec([-1.0] * 4, "decode")], [_rec([-1.0] * 4, "hf", comp=(1, 1, 1, 1))]) is None


# ----------------------------------------------------------------- two engine runs (the versions view)

def _run(comp, sampler, forced_ids=(5, 6, 7, 8), forced=None, key="p", config="c"):
    """A check's record: its own free run `comp` with sampler logprobs, and
    teacher-forced scores of the golden's ids (prompt [1, 2], then 4 tokens)."""
    return Record(config=config, prompt_id=key, sample=0, prompt_token_ids=[1, 2], completion_token_ids=list(comp),
                  sampler=Scores("decode", sampler),
                  forced=Scores("prefill", [None, -1.0, *(forced or [-1.0] * len(forced_ids))],
                                completion_token_ids=list(forced_ids)))


def test_measure__versions_view_on_forced_and_matched_sampler_tokens():
    golden = [_run((5, 6, 7, 8), [-1.0, -2.0, -0.5, -3.0], forced=[-1.0, -2.0, -0.5, -3.0])]
    # the run drew 5, 6 like the golden, then other tokens: only positions 0 and 1 are matched sampler tokens
    run = [_run((5, 6, 9, 9), [-1.0, -1.0, -0.1, -0.1], forced=[-1.0, -2.1, -0.5, -3.0])]
    m = measure_records(golden, run)
    assert m["view"] == "versions" and m["tis_cap"] == 2.0
    assert m["sampler"]["tokens"] == 2 and math.isclose(m["sampler"]["ratio"]["max"], math.exp(1.0))
    assert math.isclose(m["sampler"]["tis_truncated_fraction"], 0.5) and m["sampler"]["clip_fraction"] == 0.5
    assert m["forced"]["tokens"] == 4 and math.isclose(m["forced"]["ratio"]["min"], math.exp(-0.1), rel_tol=1e-9)
    assert m["forced"]["excluded"] == {"null": 0, "both_neg_inf": 0, "one_sided_inf": 0}
    assert set(m["per_config"]["c"]) == {"forced", "sampler"} and m["per_config"]["c"]["sampler"]["tokens"] == 2


def test_measure__versions_view_leaves_out_other_keys_and_forced_scores_of_other_tokens():
    golden = [_run((5, 6, 7, 8), [-1.0] * 4, key="a"), _run((5, 6, 7, 8), [-1.0] * 4, key="b")]
    run = [_run((9, 6, 7, 8), [-2.0] * 4, forced_ids=(1, 1, 1, 1), key="a"), _run((5, 6, 7, 8), [-1.0] * 4, key="b")]
    # a diverged at position 0 and its forced scores are of other ids: nothing on the same tokens
    assert measure_records(golden, run, include={("c", "a", 0)}) is None
    assert measure_records(golden, run)["sampler"]["tokens"] == 4   # b only: a diverged at position 0


@pytest.mark.filterwarnings("error")
def test_measure__no_numpy_warning_for_neg_inf_on_both_sides_or_float_limit_logprobs():
    inf = math.inf
    golden = [_run((5, 6, 7, 8), [-inf, -1.0, -1e308, 1e308], forced=[-inf, -inf, -1e308, -2.0])]
    run = [_run((5, 6, 7, 8), [-inf, -1.1, 1e308, -1e308], forced=[-inf, -1.0, 1e308, -2.0])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = measure_records(golden, run)
        t = measure_records([_rec([-inf, -1.0, -1e308, -2.0], "decode")], [_rec([-inf, -1.0, 1e308, -2.0], "hf")])
    assert m["forced"]["excluded"] == {"null": 0, "both_neg_inf": 1, "one_sided_inf": 1}
    assert m["sampler"]["excluded"]["both_neg_inf"] == 1 and m["sampler"]["tokens"] == 3
    # +inf and -inf differences together: k1 has no value (None, never NaN); k3 and the ratio's top are inf
    assert m["sampler"]["k1_kl"] is None and m["sampler"]["k3_kl"] == inf and m["sampler"]["ratio"]["max"] == inf
    assert m["sampler"]["ratio"]["min"] == 0.0
    assert not any(isinstance(v, float) and v != v for v in _floats(m)), "no NaN anywhere"
    assert t["tokens"] == 3 and t["k3_kl"] == inf and t["ratio"]["p50"] == 1.0


def test_compare__neg_inf_on_both_sides_prints_no_numpy_warning(tmp_path):
    """-inf on both sides is a match, not a numpy warning: the real CLI, stderr read back."""
    inf = math.inf
    golden = [_run((5, 6, 7, 8), [-inf, -1.0, -0.5, -2.0], forced=[-inf, -1.0, -0.5, -2.0])]
    run = [_run((5, 6, 7, 8), [-inf, -1.0, -0.5, -2.0], forced=[-inf, -1.0, -0.5, -2.0])]
    write_trace(tmp_path / "a", golden, manifest("golden"))
    write_trace(tmp_path / "b", run, manifest("obtained"))
    proc = run_cli("compare", "a", "b", "--out", "res", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    v = json.loads((tmp_path / "res" / "verdict.json").read_text())
    assert v["rl"]["view"] == "versions" and v["rl"]["forced"]["excluded"]["both_neg_inf"] == 1


def _floats(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from _floats(v)
    elif isinstance(x, float):
        yield x
