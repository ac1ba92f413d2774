"""gate/run/replay.py seeded_prefill_split: which seeded prefills vLLM's CPU
build must split (and so fail on, 'CPU Generator does not use offset'),
known from the batch plan and the resolved scheduler limits alone."""
from __future__ import annotations

import pytest

from gate.core.errors import BadInput
from gate.run.replay import check_seeded_prefills, plan, seeded_prefill_split

CPU = {"cpu": True, "chunked_prefill": True, "max_num_batched_tokens": 64, "long_prefill_token_threshold": 0,
       "prefix_caching": False, "block_size": 16, "max_model_len": 256}
HOT = {"temperature": 0.7, "n": 2, "seed": 7}
GREEDY = {"temperature": 0.0, "n": 1, "seed": 0}


def _split(prompts, sampling, limits=CPU, order=None):
    return seeded_prefill_split(plan(prompts, sampling, order or list(sampling)), prompts, sampling, limits)


def test_prefill_split__seeded_prompt_over_the_budget_is_found():
    assert _split({"long": list(range(65)), "short": [1, 2]}, {"hot": HOT}) == (("hot", "long", 0), 65, 65)


def test_prefill_split__a_prompt_that_fits_one_step_is_not():
    assert _split({"long": list(range(64))}, {"hot": HOT}) is None


def test_prefill_split__greedy_has_no_generator_to_rewind():
    assert _split({"long": list(range(200))}, {"greedy": GREEDY}) is None


@pytest.mark.parametrize("change", [{"cpu": False}, {"chunked_prefill": False}])
def test_prefill_split__only_on_cpu_with_chunked_prefill(change):
    assert _split({"long": list(range(200))}, {"hot": HOT}, dict(CPU, **change)) is None


def test_prefill_split__long_prefill_threshold_is_the_step():
    limits = dict(CPU, long_prefill_token_threshold=32)
    assert _split({"p": list(range(40))}, {"hot": HOT}, limits) == (("hot", "p", 0), 40, 40)


def test_prefill_split__a_prefix_cache_hit_could_save_it():
    """A greedy run of the same prompt first may leave its full blocks
    cached: the seeded prefill could then fit, so it is not refused."""
    prompts = {"long": list(range(70))}
    cached = dict(CPU, prefix_caching=True)
    assert _split(prompts, {"greedy": GREEDY, "hot": HOT}, cached) is None
    # ... but the seeded config's first request, with nothing before it, cannot be saved
    assert _split(prompts, {"hot": HOT, "greedy": GREEDY}, cached) == (("hot", "long", 0), 70, 70)
    # at most the full blocks but the last token are cached: 150 tokens leave 150 - 144 = 6 to prefill
    assert _split({"long": list(range(150))}, {"greedy": GREEDY, "hot": HOT}, cached) is None
    tight = dict(cached, max_num_batched_tokens=5)
    assert _split({"long": list(range(150))}, {"greedy": GREEDY, "hot": HOT}, tight) == (("hot", "long", 0), 150, 6)

def test_prefill_split__refusal_names_the_prompt_the_config_and_the_fix():
    prompts = {"long": list(range(150))}
    sampling = {"hot": HOT}
    with pytest.raises(BadInput) as err:
        check_seeded_prefills(plan(prompts, sampling, ["hot"]), prompts, sampling, CPU,
                              lambda pid: f"suite.yaml:9: prompt {pid!r}")
    assert err.value.what.startswith("suite.yaml:9: prompt 'long' has 150 token ids, more than one engine step "
                                     "holds (max_num_batched_tokens 64), and sampling config 'hot' is seeded")
    assert "max_num_batched_tokens=150" in err.value.hint and "enable_chunked_prefill: false" in err.value.hint
