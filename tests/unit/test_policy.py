"""Thresholds, precedence and the fixed message shape of every check."""
from __future__ import annotations

import re
import textwrap

import pytest

from gate.core.compare import compare_records
from gate.core.errors import EXIT_PASS, EXIT_REGRESSION, BadInput
from gate.core.policy import evaluate, layered_policy, load_policy, parse_policy
from gate.core.thresholds import CHECKS, DEFAULT_POLICY
from gate.core.trace import Manifest
from gate.core.verdict import build_verdict
from tests._util import record

PROMPT = (1, 2, 3)
COMPLETION = (4, 5, 6, 7)
TOKENS = ["The", " quick", " brown", " fox"]
A = [-0.5, -1.0, -2.0, -0.25]
B = [-0.5, -0.875, -2.0, -0.625]   # d = 0, +0.125, 0, -0.375
TOP_IDS = [None, [2, 9], [3, 9]] + [[t, 9] for t in COMPLETION]
TOP_LPS = [None] + [[-0.1, -2.0]] * 6


def _rec(config, values, prompt_id="fox", sample=0):
    return record(config=config, prompt_id=prompt_id, sample=sample, prompt=PROMPT, completion=COMPLETION,
                  forced=[None, -3.0, -4.0] + values, sampler=values, completion_tokens=TOKENS,
                  forced_top_ids=TOP_IDS, forced_top_lps=TOP_LPS)


def _result(policy=DEFAULT_POLICY, drift=("hot",)):
    configs = ("greedy", "hot")
    ref = [_rec(c, A) for c in configs]
    cand = [_rec(c, B if c in drift else A) for c in configs]
    return compare_records(ref, cand, policy.tolerances())


def _by(checks):
    return {(c.id, c.config): c for c in checks}


# ------------------------------------------------------------------ defaults
def test_policy__defaults():
    d = DEFAULT_POLICY.default
    assert (d.atol, d.rtol) == (1e-4, 0.0)
    assert DEFAULT_POLICY.fail_on == "regression" and DEFAULT_POLICY.per_config == {}
    assert d.bounds == {"forced.logprobs_close": None, "forced.k3_kl": 1e-6, "forced.top1_agreement": 0.999,
                        "sampler.logprobs_close": None, "sampler.k3_kl": 1e-6, "sampler.mult_prob_error": None,
                        "free_run.exact_match_rate": None, "sampler.semantics": 1e-4,
                        "sampler.spread": 1.5}
    assert DEFAULT_POLICY.unapplied_engine_args == "fail"
    assert d.min_evidence == 0.5
    assert all(c.source for c in CHECKS), "every default says where it comes from"


def test_policy__defaults_gate_teacher_forced_and_sampler_not_free_run():
    checks = evaluate(DEFAULT_POLICY, _result(drift=()))
    ids = {c.id for c in checks}
    assert ids == {"forced.logprobs_close", "forced.k3_kl", "forced.top1_agreement", "sampler.logprobs_close",
                   "sampler.k3_kl", "sampler.semantics", "sampler.spread"}
    assert {c.config for c in checks} == {"greedy", "hot"}
    in_run = ("sampler.semantics", "sampler.spread")
    assert all(c.status == "pass" for c in checks if c.id not in in_run)
    # 4 sampled tokens per config are too few to fit a relation or weigh its spread: said, never passed
    sem = [c for c in checks if c.id in in_run]
    assert len(sem) == 4 and all(c.status == "not_comparable" and "too few tokens" in c.note for c in sem)


def test_policy__drift_fails_tolerance_and_k3():
    checks = _by(evaluate(DEFAULT_POLICY, _result()))
    assert checks[("forced.logprobs_close", "hot")].status == "fail"
    assert checks[("forced.logprobs_close", "hot")].n_bad == 2
    assert checks[("forced.k3_kl", "hot")].status == "fail"
    assert checks[("sampler.logprobs_close", "hot")].status == "fail"
    assert checks[("forced.logprobs_close", "greedy")].status == "pass"
    assert checks[("forced.top1_agreement", "hot")].status == "pass"


# ------------------------------------------------------------------ message shape
MESSAGE = re.compile(
    r"^(?P<status>PASS|FAIL) (?P<title>[^\[]+) \[(?P<config>[^\]]+)\]: (?P<bad>\d+) of (?P<total>\d+) tokens "
    r"\((?P<pct>[\d.]+)%\) .*max abs diff (?P<max>\S+) at config '(?P<c>[^']+)' prompt '(?P<p>[^']+)' "
    r"sample (?P<s>\d+) position (?P<pos>\d+) token '(?P<tok>[^']*)' \(id (?P<id>\d+)\); "
    r"allowed (?P<measure>.+) (?P<op><=|>=) (?P<bound>\S+)$")


def test_policy__message_shape_of_tolerance_failure():
    c = _by(evaluate(DEFAULT_POLICY, _result()))[("forced.logprobs_close", "hot")]
    m = MESSAGE.match(c.message)
    assert m, c.message
    assert m["status"] == "FAIL" and m["title"] == "teacher-forced logprobs" and m["config"] == "hot"
    assert (m["bad"], m["total"], m["pct"]) == ("2", "4", "50.00")
    assert float(m["max"]) == 0.375
    assert (m["c"], m["p"], m["s"], m["pos"], m["tok"], m["id"]) == ("hot", "fox", "0", "3", " fox", "7")
    assert m["measure"] == "max abs diff" and m["op"] == "<=" and float(m["bound"]) == 1e-4
    assert c.message == ("FAIL teacher-forced logprobs [hot]: 2 of 4 tokens (50.00%) differ by more than "
                         "|d| <= 1.00e-04; max abs diff 0.375 at config 'hot' prompt 'fox' sample 0 position 3 "
                         "token ' fox' (id 7); allowed max abs diff <= 1.00e-04")


def test_policy__message_shape_of_measure_failure():
    c = _by(evaluate(DEFAULT_POLICY, _result()))[("sampler.k3_kl", "hot")]
    m = MESSAGE.match(c.message)
    assert m, c.message
    assert m["title"] == "sampled-token k3 KL" and m["measure"] == "k3_kl" and float(m["bound"]) == 1e-6
    assert c.message == ("FAIL sampled-token k3 KL [hot]: 2 of 4 tokens (50.00%) beyond tolerance, k3_kl 0.0176; "
                         "max abs diff 0.375 at config 'hot' prompt 'fox' sample 0 position 3 token ' fox' (id 7); "
                         "allowed k3_kl <= 1.00e-06")


def test_policy__message_mentions_rtol_when_set():
    pol = parse_policy({"rtol": 0.01}, "x")
    c = _by(evaluate(pol, _result(pol)))[("forced.logprobs_close", "hot")]
    assert "|d| <= 1.00e-04 + 0.01*|a|" in c.message


def test_policy__passing_message_has_same_shape():
    c = _by(evaluate(DEFAULT_POLICY, _result()))[("forced.logprobs_close", "greedy")]
    assert c.message.startswith("PASS teacher-forced logprobs [greedy]: 0 of 4 tokens (0.00%)")


# ------------------------------------------------------------------ precedence
SUITE_POLICY = {"atol": 0.2, "checks": {"forced.k3_kl": 1.0e-3}, "per_config": {"hot": {"atol": 0.5}}}


def _policy_file(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_policy__suite_overrides_defaults():
    pol = layered_policy(SUITE_POLICY, "suite.yaml", None, None, {"greedy", "hot"})
    assert pol.default.atol == 0.2 and pol.default.rtol == 0.0
    assert pol.default.bounds["forced.k3_kl"] == 1e-3
    assert pol.default.bounds["sampler.k3_kl"] == 1e-6          # untouched default
    assert pol.rules("hot").atol == 0.5
    assert pol.rules("hot").bounds["forced.k3_kl"] == 1e-3      # per-config inherits the suite's default
    assert pol.rules("greedy").atol == 0.2


def test_policy__cli_overrides_suite_overrides_defaults(tmp_path):
    path = _policy_file(tmp_path, """\
        atol: 1.0e-3
        checks:
          sampler.k3_kl: 1.0e-2
        per_config:
          hot:
            rtol: 0.1
    """)
    pol = layered_policy(SUITE_POLICY, "suite.yaml", path, None, {"greedy", "hot"})
    assert pol.default.atol == 1e-3                              # CLI beats suite (0.2)
    assert pol.default.bounds["forced.k3_kl"] == 1e-3            # suite kept where CLI is silent
    assert pol.default.bounds["sampler.k3_kl"] == 1e-2           # CLI beats default
    assert pol.default.bounds["forced.top1_agreement"] == 0.999  # default kept
    assert (pol.rules("hot").atol, pol.rules("hot").rtol) == (0.5, 0.1)  # CLI layered on the suite's per-config
    assert pol.fail_on == "regression"


def test_policy__fail_on_flag_beats_files(tmp_path):
    path = _policy_file(tmp_path, "fail_on: regression\n")
    pol = layered_policy({"fail_on": "regression"}, "suite.yaml", path, "never", {"hot"})
    assert pol.fail_on == "never"


def test_policy__per_config_override_changes_only_that_config():
    pol = parse_policy({"per_config": {"hot": {"atol": 0.5, "checks": {"forced.k3_kl": 1.0}}}}, "x",
                       configs={"greedy", "hot"})
    checks = _by(evaluate(pol, _result(pol, drift=("greedy", "hot"))))
    assert checks[("forced.logprobs_close", "hot")].status == "pass"
    assert checks[("forced.logprobs_close", "hot")].bound == 0.5
    assert checks[("forced.k3_kl", "hot")].status == "pass"
    assert checks[("forced.logprobs_close", "greedy")].status == "fail"
    assert checks[("forced.k3_kl", "greedy")].status == "fail"


def test_policy__null_turns_a_check_off_and_a_bound_turns_one_on():
    pol = parse_policy({"checks": {"forced.logprobs_close": None, "forced.k3_kl": None,
                                   "free_run.exact_match_rate": 1.0, "sampler.mult_prob_error": 1.05}}, "x")
    checks = _by(evaluate(pol, _result(pol)))
    assert ("forced.logprobs_close", "hot") not in checks and ("forced.k3_kl", "hot") not in checks
    assert checks[("free_run.exact_match_rate", "hot")].status == "pass"
    mpe = checks[("sampler.mult_prob_error", "hot")]
    assert mpe.status == "fail" and mpe.value > 1.05  # (1 + e^0.125 + 1 + e^0.375)/4 = 1.145


# ------------------------------------------------------------------ fail_on
def _verdict(pol):
    result = _result(pol)
    m = Manifest(kind="golden")
    return build_verdict(mode="compare", reference=("A", "a", m), candidate=("B", "b", m), result=result,
                         checks=evaluate(pol, result), policy=pol, prompts_new=[], prompts_unused=[], warnings=[],
                         reproduce="parity-gate compare a b --out r", files={})


def test_policy__fail_on_regression_exits_1():
    v = _verdict(DEFAULT_POLICY)
    assert v["verdict"] == "fail" and v["exit_code"] == EXIT_REGRESSION


def test_policy__fail_on_never_reports_fail_but_exits_0():
    v = _verdict(parse_policy({"fail_on": "never"}, "x"))
    assert v["verdict"] == "fail" and v["exit_code"] == EXIT_PASS and v["fail_on"] == "never"
    assert v["headline"].startswith("FAIL: ")


# ------------------------------------------------------------------ bad policies
@pytest.mark.parametrize("data,message", [
    ({"atol": "1e-4"}, r"policy 'atol' must be a non-negative number, got '1e-4'"),
    ({"atol": -1.0}, r"policy 'atol' must be a non-negative number"),
    ({"rtol": None}, r"policy 'rtol' must be a non-negative number, got None"),
    ({"tolerance": 1.0}, r"unknown policy keys \['tolerance'\]"),
    ({"checks": {"forced.bogus": 1.0}}, r"unknown check 'forced.bogus' in policy"),
    ({"checks": {"forced.logprobs_close": 0.1}}, r"takes its bound from atol/rtol"),
    ({"checks": [1]}, r"'checks' must be a mapping"),
    ({"checks": {"forced.k3_kl": True}}, r"checks.forced.k3_kl' must be a non-negative number"),
    ({"fail_on": "sometimes"}, r"fail_on must be one of"),
    ({"per_config": {"nope": {"atol": 1.0}}}, r"per_config names unknown sampling config 'nope'"),
    ({"per_config": ["hot"]}, r"'per_config' must map config names"),
    ({"per_config": {"hot": 3}}, r"policy must be a mapping, got int"),
    ([1, 2], r"policy must be a mapping, got list"),
])
def test_policy__bad_values_are_bad_input(data, message):
    with pytest.raises(BadInput, match=message):
        parse_policy(data, "where", configs={"hot"})


def test_policy__unknown_check_suggests_the_near_name_and_lists_all():
    with pytest.raises(BadInput) as exc:
        parse_policy({"checks": {"forced.k3kl": 1e-6}}, "suite.yaml:14")
    assert exc.value.what.startswith("suite.yaml:14: unknown check 'forced.k3kl' in policy (did you mean "
                                     "'forced.k3_kl'? known checks: forced.logprobs_close, forced.k3_kl, ")
    assert all(spec.id in exc.value.what for spec in CHECKS)
    with pytest.raises(BadInput) as exc:
        parse_policy({"checks": {"zzz": 1.0}}, "where")
    assert "did you mean" not in exc.value.what and "known checks: forced.logprobs_close" in exc.value.what


def test_policy__file_errors_carry_the_path(tmp_path):
    path = _policy_file(tmp_path, "atol: [1\n")
    with pytest.raises(BadInput, match=r"policy.yaml:\d+: malformed YAML"):
        load_policy(path)
    with pytest.raises(BadInput, match=r"nope.yaml: file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_policy__empty_file_keeps_base(tmp_path):
    path = _policy_file(tmp_path, "# nothing\n")
    assert load_policy(path) == DEFAULT_POLICY
