"""The suite file: which model, which engine args, which prompts, which
sampling configs, which thresholds. Validated whole before anything runs;
every problem is named with file:line (docs/suite-format.md)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import outside, workspace_root
from gate.core.policy import parse_policy  # validated with the suite, so a bad policy fails before the engine starts
from gate.core.rows import SamplingParams
from gate.core.yamlio import PROMPTS_FILE_SIZE_LIMIT, SUITE_SIZE_LIMIT, YAML_ALIAS_LIMIT, load_yaml
from gate.run import engine as adapter  # imports vllm only when asked to
from gate.run.lengths import context_length, length_problems
from gate.run.problems import Problems, line_of, one_message, surrogate
from gate.run.prompts import Prompt, load_prompts_file, parse_prompt, prompt_location
from gate.run.sampling import SamplingConfig, parse_sampling
from gate.run.update_spec import WeightUpdateSpec, parse_weight_update

__all__ = ["Suite", "load_suite", "confine", "load_yaml", "parse_engine_arg",
           "check_prompt_lengths", "validate_with_vllm", "workload_hash", "prompt_hash",
           "SUITE_SIZE_LIMIT", "PROMPTS_FILE_SIZE_LIMIT", "YAML_ALIAS_LIMIT"]

TOP_KEYS = {"name", "description", "model", "engine", "prompts", "prompts_file", "sampling", "policy",
            "weight_update"}


@dataclass(frozen=True)
class Suite:
    path: Path
    model: Path
    engine: dict[str, Any]
    prompts: tuple[Prompt, ...]
    sampling: tuple[SamplingConfig, ...]
    policy: Any = None
    name: str = ""
    engine_lines: dict[str, str] = field(default_factory=dict)
    weight_update: WeightUpdateSpec | None = None

    @property
    def sampling_by_name(self) -> dict[str, SamplingConfig]:
        return {s.name: s for s in self.sampling}


def parse_engine_arg(text: str) -> tuple[str, Any]:
    """`--engine-arg KEY=VALUE`, VALUE parsed as YAML (so 0.5, true, {a: 1} work)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadInput(f"--engine-arg {text!r} is not KEY=VALUE", "e.g. --engine-arg logprobs_mode=processed_logprobs")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise BadInput(f"--engine-arg {key}: value {raw!r} is not valid YAML",
                       "quote strings with special characters") from None
    return key, value


def check_prompt_lengths(suite: Suite, prompt_ids: Mapping[str, Sequence[int]],
                         engine_args: Mapping[str, Any] | None = None) -> None:
    """Prompts whose length is known only once tokenized (text prompts, at
    engine start) or that come from a golden: each prompt, and each prompt
    plus the largest max_tokens, must fit max_model_len. `engine_args` are
    the args the engine runs with (the suite's plus --engine-arg); the
    suite's own when None. Raises BadInput naming file:line and prompt id."""
    engine = suite.engine if engine_args is None else engine_args
    source = f"engine.max_model_len at {suite.engine_lines.get('max_model_len', suite.path)}"
    if engine.get("max_model_len") != suite.engine.get("max_model_len"):
        source = "--engine-arg max_model_len"
    context = context_length(suite.model, engine, source)
    if context is None:
        return
    located = {p.id: prompt_location(suite.path, p) for p in suite.prompts}
    items = length_problems(((located.get(pid, str(suite.path)), pid, len(ids)) for pid, ids in prompt_ids.items()),
                             suite.sampling, context)
    if items:
        raise BadInput(one_message(items, "prompts too long"),
                       "shorten the prompt, lower max_tokens, or raise engine.max_model_len (as far as the model "
                       "allows)")


def validate_with_vllm(suite: Suite) -> None:
    """vLLM's own SamplingParams rules, for every sampling config, before the
    engine starts: the params are built exactly as the run builds them
    (gate.run.engine), so no rule is copied here. Imports vllm (seconds):
    record and check call it; load_suite stays free of vllm. A missing vllm
    is left to the engine start, which reports it."""
    if importlib.util.find_spec("vllm") is None:
        return
    adapter._prepare_environment()  # before vllm's import configures its logging
    build = adapter.Engine(suite.model, {})._params
    try:
        build({"max_tokens": 1})  # imports vllm: a broken install is not the suite's fault
    except Exception as exc:  # noqa: BLE001 - vLLM's import fails in many ways (torch ops, CUDA libs)
        raise InfraError(f"vLLM cannot be imported: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                         "check the vLLM install: pip install 'parity-gate[gpu]' (CUDA) or 'parity-gate[cpu]'") \
            from None
    items = []
    for config in suite.sampling:
        seeds = config.seeds()
        requests = [dict(config.params, seed=seed) for seed in {seeds[0], seeds[-1]}]
        scoring = ({"max_tokens": 1, "temperature": 0.0}, {"prompt_logprobs": config.logprobs, "logprobs": None})
        try:
            for params in requests:
                build(params)
            build(scoring[0], **scoring[1])
        except Exception as exc:  # noqa: BLE001 - vLLM raises its own error types, not ValueError
            detail = " ".join(str(exc).split())[:300]
            items.append(f"{suite.path}{config.where}: sampling config {config.name!r} rejected by vLLM: {detail}")
    if items:
        raise BadInput(one_message(items, "sampling configs rejected by vLLM"),
                       "use values this vLLM accepts (see docs/suite-format.md)")


def confine(path: Path, what: str) -> None:
    """--strict-paths: refuse an input whose real path is outside the workspace."""
    real = outside(path, workspace_root())
    if real is not None:
        raise BadInput(f"{what} {path} resolves to {real}, outside the workspace {workspace_root()} (--strict-paths)",
                       "keep the file inside the workspace (not a symlink out of it), or drop --strict-paths")


def load_suite(path: Path, strict_paths: bool = False, need_model: bool = True) -> Suite:
    """`strict_paths`: the suite file and its prompts_file must really lie in
    the workspace (gate/_fsutil.workspace_root); a symlink out of it is
    refused, so a PR can't point the gate at files elsewhere on the runner.
    `need_model=False` (merge, on a runner without the model): the model
    folder is not looked at."""
    path = Path(path)
    if strict_paths:
        confine(path, "suite")
    data = load_yaml(path)
    problems = Problems(path)
    if data is None:
        raise BadInput(f"{path}: the suite is empty", "start from examples/suite.yaml")
    if not isinstance(data, dict):
        raise BadInput(f"{path}:1: the suite must be a mapping, got {type(data).__name__}",
                       "start from examples/suite.yaml")
    for key in data:
        if key not in TOP_KEYS:
            problems.add(line_of(data, key), f"unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    base = path.parent
    model = data.get("model")
    model_path = base
    model_ok = False
    if not isinstance(model, str) or not model:
        problems.add(line_of(data, "model") or ":1", "'model' must be a local path (string)")
    else:
        model_path = (base / model).resolve() if not Path(model).is_absolute() else Path(model)
        if not need_model:
            pass
        elif not model_path.is_dir() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
            # A hub id: the gate never downloads (the action runs HF_HUB_OFFLINE=1), so say how to fetch it.
            problems.add(line_of(data, "model"), f"model {model!r} is not a local folder ({model_path} does not "
                                                f"exist) and looks like a Hugging Face hub id: the gate reads local "
                                                f"folders only; fetch it onto the runner first (hf download {model} "
                                                f"--revision COMMIT --local-dir /models/{model.rsplit('/', 1)[-1]}) "
                                                f"and set model: to that folder")
        elif not model_path.is_dir():
            problems.add(line_of(data, "model"), f"model folder {model_path} does not exist "
                                              "(a local path; relative paths resolve against the suite's folder)")
        elif not (model_path / "config.json").is_file():
            problems.add(line_of(data, "model"), f"model folder {model_path} has no config.json")
        else:
            model_ok = True
    engine = data.get("engine", {}) or {}
    if not isinstance(engine, dict):
        problems.add(line_of(data, "engine"), f"'engine' must be a mapping of vLLM engine args, got "
                                            f"{type(engine).__name__}")
        engine = {}
    if "model" in engine:
        problems.add(line_of(engine, "model"), "engine.model is not allowed; set the top-level 'model'")
    engine_lines = {k: f"{path}{line_of(engine, k)}" for k in engine}
    prompts: list[Prompt] = []
    raw_prompts = data.get("prompts")
    if raw_prompts is not None:
        if not isinstance(raw_prompts, list):
            problems.add(line_of(data, "prompts"), "'prompts' must be a list of {id, text} or {id, token_ids}")
        else:
            for i, item in enumerate(raw_prompts):
                p = parse_prompt(item, line_of(raw_prompts, i), problems)
                if p is not None:
                    prompts.append(p)
    if "prompts_file" in data:
        pf = data["prompts_file"]
        if not isinstance(pf, str) or not pf:
            problems.add(line_of(data, "prompts_file"), "'prompts_file' must be a path to a JSONL file")
        else:
            real = outside(base / pf, workspace_root()) if strict_paths else None
            if real is not None:
                problems.add(line_of(data, "prompts_file"), f"prompts_file {pf} resolves to {real}, outside the "
                                                          f"workspace {workspace_root()} (--strict-paths)")
            else:
                prompts.extend(load_prompts_file(base / pf, problems, line_of(data, "prompts_file")))
    seen: dict[str, str] = {}
    for p in prompts:
        if p.id in seen:
            problems.add(p.where if p.where.startswith(":") else "", f"duplicate prompt id {p.id!r} "
                         f"(also at {seen[p.id] if not seen[p.id].startswith(':') else str(path) + seen[p.id]})")
        else:
            seen[p.id] = p.where
    if not prompts and not any("prompt" in i for i in problems.items):
        problems.add(line_of(data, "prompts") or "", "the suite has no prompts (add 'prompts' or 'prompts_file')")
    sampling: list[SamplingConfig] = []
    raw_sampling = data.get("sampling")
    if raw_sampling is None or raw_sampling == []:
        problems.add(line_of(data, "sampling") or "", "the suite has no sampling configs (add 'sampling')")
    elif not isinstance(raw_sampling, list):
        problems.add(line_of(data, "sampling"), "'sampling' must be a list of named configs")
    else:
        names: set[str] = set()
        for i, item in enumerate(raw_sampling):
            s = parse_sampling(item, line_of(raw_sampling, i), problems)
            if s is None:
                continue
            if s.name in names:
                problems.add(line_of(raw_sampling, i), f"duplicate sampling config name {s.name!r}")
            names.add(s.name)
            sampling.append(s)
    policy = data.get("policy")
    if policy is not None:
        try:
            parse_policy(policy, f"{path}{line_of(data, 'policy')}", configs={s.name for s in sampling})
        except BadInput as exc:
            problems.items.append(exc.what)
    context = None
    if model_ok:
        try:
            context = context_length(model_path, engine, f"engine.max_model_len at {engine_lines.get('max_model_len')}")
        except BadInput as exc:  # a broken config.json
            problems.items.append(exc.what)
    if context is not None:
        known = [(prompt_location(path, p), p.id, len(p.token_ids)) for p in prompts if p.token_ids is not None]
        problems.items.extend(length_problems(known, sampling, context))
    update = None
    if data.get("weight_update") is not None:
        update = parse_weight_update(data["weight_update"], line_of(data, "weight_update"), base, model_path, problems)
    name = data.get("name", path.stem)
    if isinstance(name, str) and surrogate(name):
        problems.add(line_of(data, "name"), f"'name' holds {surrogate(name)}")
    problems.raise_if_any()
    return Suite(path=path, model=model_path, engine=dict(engine), prompts=tuple(prompts),
                 sampling=tuple(sampling), policy=policy, name=str(name), engine_lines=engine_lines,
                 weight_update=update)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prompt_hash(token_ids: list[int]) -> str:
    return _sha(list(token_ids))[:16]


def workload_hash(prompt_ids: dict[str, list[int]], sampling: dict[str, SamplingParams]) -> str:
    """Identity of what is run: prompt token ids and sampling configs only.
    Editing `engine:` or `policy:` never makes a golden stale."""
    return _sha({"prompts": {k: list(v) for k, v in sorted(prompt_ids.items())},
                 "sampling": dict(sorted(sampling.items()))})[:16]
