"""The environment fingerprint (gate/run/engine.py): the libraries that change
token ids or numerics and the sampler implementation are recorded, and a
change in any of them shows in the verdict's environment diff."""
from __future__ import annotations

import pytest

from gate.core.trace import Manifest
from gate.core.verdict import environment_diff

BASE = {"vllm_version": "0.32.0", "torch_version": "2.13.0+cpu", "transformers_version": "5.19.0",
        "tokenizers_version": "0.23.3", "sampler_backend": "cpu-native", "device_name": "cpu (x86_64)",
        "python_version": "3.11.7", "platform": "Linux", "env": {}}


def _rows(ref: dict, cand: dict) -> dict[str, dict]:
    diff = environment_diff(Manifest(kind="golden", environment=ref), Manifest(kind="obtained", environment=cand))
    return {r["key"]: r for r in diff}


@pytest.mark.parametrize("key, moved", [("transformers_version", "5.20.0"), ("tokenizers_version", "0.24.0"),
                                        ("sampler_backend", "flashinfer 0.2.5")])
def test_engine_fingerprint__change_shows_in_environment_diff(key, moved):
    rows = _rows(BASE, dict(BASE, **{key: moved}))
    assert rows[key]["differs"] is True
    assert (rows[key]["reference"], rows[key]["candidate"]) == (BASE[key], moved)
    assert [k for k, r in rows.items() if r["differs"]] == [key]


def test_engine_fingerprint__unchanged_keys_listed_not_differing():
    rows = _rows(BASE, dict(BASE))
    for key in ("transformers_version", "tokenizers_version", "sampler_backend"):
        assert rows[key]["differs"] is False


def test_engine_fingerprint__old_golden_without_the_keys_is_listed_not_counted():
    old = {k: v for k, v in BASE.items() if k not in ("transformers_version", "sampler_backend")}
    rows = _rows(old, BASE)
    assert rows["sampler_backend"]["differs"] is False
    assert rows["sampler_backend"]["recorded_by"] == "candidate"


class _Fn:
    def __init__(self, name: str) -> None:
        self.__name__ = name


class _Obj:
    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _llm(sampler) -> _Obj:
    """The attribute path of vLLM's in-process engine down to its model runner's sampler."""
    runner = _Obj(sampler=sampler)
    executor = _Obj(driver_worker=_Obj(worker=_Obj(model_runner=runner)))
    return _Obj(llm_engine=_Obj(engine_core=_Obj(engine_core=_Obj(model_executor=executor))))


@pytest.mark.parametrize("bound, expect", [("forward_cpu", "cpu-native"), ("forward_native", "pytorch-native"),
                                           ("forward_cuda", "flashinfer")])
def test_engine_fingerprint__sampler_read_off_the_running_engine(bound, expect):
    from gate.run.fingerprint import _live_sampler

    topk = _Obj(forward=_Fn(bound), use_fp64_gumbel=False)
    assert _live_sampler(_llm(_Obj(topk_topp_sampler=topk))) == expect


def test_engine_fingerprint__fp64_gumbel_and_model_runner_v2_are_named():
    from gate.run.fingerprint import _live_sampler

    topk = _Obj(forward=_Fn("forward_cpu"), use_fp64_gumbel=True)
    assert _live_sampler(_llm(_Obj(topk_topp_sampler=topk))) == "cpu-native+fp64-gumbel"
    assert _live_sampler(_llm(_Obj(use_flashinfer=True, use_xpu_sampler=False))) == "flashinfer"
    assert _live_sampler(_llm(_Obj(use_flashinfer=False, use_xpu_sampler=False))) == "gumbel (model runner v2)"
    assert _live_sampler(_Obj(llm_engine=_Obj(engine_core=_Obj()))) is None  # a worker in another process


def test_engine_fingerprint__without_an_engine_carries_the_library_versions():
    """Asked as vLLM's TopKTopPSampler decides: on this CPU build, its CPU
    kernel. Imports torch and vllm, starts no engine."""
    pytest.importorskip("vllm")
    from importlib import metadata

    from gate.run.fingerprint import environment_fingerprint

    fp = environment_fingerprint(logprobs_mode="raw_logprobs")
    assert fp["transformers_version"] == metadata.version("transformers")
    assert fp["tokenizers_version"] == metadata.version("tokenizers")
    assert fp["sampler_backend"] == "cpu-native"
