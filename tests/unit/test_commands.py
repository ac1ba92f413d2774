"""Workload matching between a suite and a golden (no engine)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gate.core.errors import StaleGolden
from gate.core.trace import Manifest
from gate.run.golden import match_workload
from gate.run.prompts import Prompt
from gate.run.sampling import SAMPLING_DEFAULTS, SamplingConfig
from gate.run.suite import Suite, prompt_hash


def _suite(prompts, sampling) -> Suite:
    return Suite(path=Path("suite.yaml"), model=Path("m"), engine={}, prompts=tuple(prompts),
                 sampling=tuple(sampling))


def _golden(prompts: dict[str, list[int]], texts: dict[str, str | None], sampling: dict[str, dict]) -> Manifest:
    return Manifest(kind="golden", suite={"sampling": sampling, "prompts": {
        pid: {"sha256": prompt_hash(ids), "text": texts.get(pid)} for pid, ids in prompts.items()}})


SUITE_ARG = Path("suite.yaml")
GREEDY = dict(SAMPLING_DEFAULTS, temperature=0.0)


def test_commands__new_and_unused_prompts_are_reported_and_only_shared_keys_compared():
    suite = _suite([Prompt("a", token_ids=(1, 2)), Prompt("new", token_ids=(3,))],
                   [SamplingConfig("greedy", GREEDY), SamplingConfig("extra", dict(SAMPLING_DEFAULTS))])
    golden = _golden({"a": [1, 2], "gone": [4]}, {}, {"greedy": GREEDY})
    keys = [("greedy", "a", 0), ("greedy", "gone", 0)]
    w = match_workload(suite, golden, Path("golden"), SUITE_ARG, keys)
    assert w.include == {("greedy", "a", 0)}
    assert w.new == ["prompt new", "config extra"]
    assert w.unused == ["prompt gone"]


def test_commands__sampling_config_changed_under_same_name_is_stale_with_rerecord_command():
    suite = _suite([Prompt("a", token_ids=(1, 2))], [SamplingConfig("greedy", dict(GREEDY, max_tokens=32))])
    golden = _golden({"a": [1, 2]}, {}, {"greedy": GREEDY})
    with pytest.raises(StaleGolden, match=r"sampling config 'greedy' changed .*\(max_tokens\)") as exc:
        match_workload(suite, golden, Path("golden"), SUITE_ARG, [("greedy", "a", 0)])
    assert "parity-gate record --suite suite.yaml --out golden --update" in exc.value.hint


@pytest.mark.parametrize("prompt, golden_text, golden_ids, what", [
    (Prompt("a", text="hello there"), "hello", [1], "text changed"),
    (Prompt("a", token_ids=(1, 9)), None, [1, 2], "token ids changed"),
    (Prompt("a", text="hello"), None, [1], "switched between text and token_ids"),
])
def test_commands__prompt_changed_under_same_id_is_stale(prompt, golden_text, golden_ids, what):
    suite = _suite([prompt], [SamplingConfig("greedy", GREEDY)])
    golden = _golden({"a": golden_ids}, {"a": golden_text}, {"greedy": GREEDY})
    with pytest.raises(StaleGolden, match=what):
        match_workload(suite, golden, Path("golden"), SUITE_ARG, [("greedy", "a", 0)])
