"""The suite file: which model, which engine args, which prompts, which
sampling configs, which thresholds. Validated whole before anything runs;
every problem is named with file:line (docs/suite-format.md)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import NotRegularFile, TooLarge, open_regular, outside, workspace_root
from gate.core.identity import ContextLength, model_max_len
from gate.core.policy import parse_policy  # validated with the suite, so a bad policy fails before the engine starts
from gate.core.yamlio import PROMPTS_FILE_SIZE_LIMIT, SUITE_SIZE_LIMIT, YAML_ALIAS_LIMIT, cannot_read, load_yaml, mib
from gate.run import engine as adapter  # imports vllm only when asked to

__all__ = ["Prompt", "SamplingConfig", "Suite", "load_suite", "confine", "load_yaml", "parse_engine_arg",
           "check_prompt_lengths", "validate_with_vllm", "workload_hash", "SAMPLING_DEFAULTS",
           "SUITE_SIZE_LIMIT", "PROMPTS_FILE_SIZE_LIMIT", "YAML_ALIAS_LIMIT", "UpdatePathSpec", "WeightUpdateSpec",
           "UPDATE_VIAS", "UPDATE_PAUSES", "UPDATE_CACHE"]

TOP_KEYS = {"name", "description", "model", "engine", "prompts", "prompts_file", "sampling", "policy",
            "weight_update"}
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "seed": 0, "n": 1, "logprobs": 5,
    "min_tokens": 0, "ignore_eos": False,
}
_SAMPLING_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float), "top_p": (int, float), "top_k": (int,), "max_tokens": (int,), "seed": (int,),
    "n": (int,), "logprobs": (int,), "min_tokens": (int,), "ignore_eos": (bool,),
}
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
SEED_LIMIT = 2**63  # per-request seeds are signed 64-bit on the engine's side

_MAX_PROBLEMS = 20  # shown in the one-line message; the rest are counted


def _line(container: Any, key: Any) -> str:
    lines = getattr(container, "lines", None)
    try:
        return f":{lines[key]}" if lines is not None else ""
    except (KeyError, IndexError, TypeError):
        return ""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    where: str = ""


@dataclass(frozen=True)
class SamplingConfig:
    name: str
    params: dict[str, Any]  # SAMPLING_DEFAULTS filled in: the hash is stable under defaults
    where: str = field(default="", compare=False)  # ":LINE" in the suite, for messages

    @property
    def n(self) -> int:
        return int(self.params["n"])

    @property
    def logprobs(self) -> int:
        return int(self.params["logprobs"])

    def seeds(self) -> list[int]:
        """`n: k` with `seed: s` expands into k requests with seeds s, s+1, ..."""
        return [int(self.params["seed"]) + i for i in range(self.n)]


# `weight_update:` (docs/suite-format.md, docs/weight-update.md): the update paths `check` runs after its comparison
UPDATE_VIAS = ("reload", "native", "sleep")
UPDATE_PAUSES = ("none", "abort", "wait", "keep")
UPDATE_CACHE = ("clear", "keep")
_UPDATE_KEYS = ("from", "load", "paths", "max_tokens", "switch_at", "atol", "backend")
_PATH_KEYS = ("via", "pause", "cache")
UPDATE_PATH_DEFAULT = {"via": "reload", "pause": "keep", "cache": "clear"}


@dataclass(frozen=True)
class UpdatePathSpec:
    via: str
    pause: str
    clear_cache: bool
    where: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return f"{self.via}/{self.pause}/{'clear-cache' if self.clear_cache else 'keep-cache'}"


@dataclass(frozen=True)
class WeightUpdateSpec:
    """What `check` runs after its comparison: the engine starts on `source`
    (the old weights, A), the update loads `load` (the new ones, B; default
    the suite's model), once per path."""
    source: Path
    load: Path
    paths: tuple[UpdatePathSpec, ...]
    max_tokens: int = 16
    switch_at: int | None = None
    atol: float = 1e-4
    backend: str = "file"
    where: str = field(default="", compare=False)


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


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{self.path}{where}: {message}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        raise BadInput(_one_message(self.items, "problems in the suite"),
                       "fix the suite file (see docs/suite-format.md)")


def _one_message(items: list[str], what: str) -> str:
    if len(items) == 1:
        return items[0]
    shown = "; ".join(items[:_MAX_PROBLEMS])
    more = f"; and {len(items) - _MAX_PROBLEMS} more" if len(items) > _MAX_PROBLEMS else ""
    return f"{len(items)} {what}: {shown}{more}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _surrogate(text: str) -> str | None:
    """Where `text` holds a lone surrogate (YAML and JSON can write "\\ud800"):
    not Unicode, so no tokenizer, trace or report can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not valid Unicode"
    return None


def _parse_prompt(item: Any, where: str, problems: _Problems) -> Prompt | None:
    if not isinstance(item, dict):
        problems.add(where, f"prompt must be a mapping with 'id' and 'text' or 'token_ids', got {type(item).__name__}")
        return None
    unknown = set(item) - {"id", "text", "token_ids"}
    if unknown:
        problems.add(where, f"unknown prompt keys {sorted(unknown, key=str)} (allowed: id, text, token_ids)")
    pid = item.get("id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
        problems.add(where, f"prompt 'id' must be a non-empty string, got {pid!r}")
        return None
    pid = str(pid)  # `id: 7` is the prompt '7' everywhere, messages included
    bad = _surrogate(pid)
    if bad:
        problems.add(where, f"prompt id {pid!r} holds {bad}")
        return None
    has_text, has_ids = "text" in item, "token_ids" in item
    if has_text == has_ids:
        problems.add(where, f"prompt {pid!r} needs exactly one of 'text' or 'token_ids'")
        return None
    if has_text:
        if not isinstance(item["text"], str) or not item["text"]:
            problems.add(where, f"prompt {pid!r}: 'text' must be a non-empty string")
            return None
        bad = _surrogate(item["text"])
        if bad:
            problems.add(where, f"prompt {pid!r}: 'text' holds {bad}")
            return None
        return Prompt(id=str(pid), text=item["text"], where=where)
    ids = item["token_ids"]
    if not isinstance(ids, list) or not ids or not all(_is_int(t) and t >= 0 for t in ids):
        problems.add(where, f"prompt {pid!r}: 'token_ids' must be a non-empty list of non-negative integers")
        return None
    return Prompt(id=str(pid), token_ids=tuple(ids), where=where)


def _load_prompts_file(path: Path, problems: _Problems, where: str) -> list[Prompt]:
    """JSONL, one prompt per line, read line by line: a regular file of at
    most PROMPTS_FILE_SIZE_LIMIT bytes. Lines end at "\\n" only (JSON text
    may hold U+2028 and the like), so line numbers match an editor's."""
    limit = PROMPTS_FILE_SIZE_LIMIT
    try:
        fh = open_regular(path, limit)
    except (OSError, ValueError, NotRegularFile, TooLarge) as exc:
        why = ("not found (relative paths resolve against the suite's folder)" if isinstance(exc, FileNotFoundError)
               else "is a folder, not a JSONL file" if isinstance(exc, IsADirectoryError)
               else f"{exc} for a prompts file" if isinstance(exc, TooLarge)
               else str(exc) if isinstance(exc, NotRegularFile) else cannot_read(exc))
        problems.add(where, f"prompts_file {path} {why}")
        return []
    out = []
    with fh:
        used, i = 0, 0
        while raw := fh.readline(limit - used + 1):
            i += 1
            used += len(raw)
            if used > limit:
                problems.add(where, f"prompts_file {path} is over the {mib(limit)} limit for a prompts file")
                return []
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.items.append(f"{path}:{i}: not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.items.append(f"{path}:{i}: malformed JSON line ({exc.msg})")
                continue
            except (ValueError, RecursionError) as exc:  # 5,000-digit ints, deep nesting
                problems.items.append(f"{path}:{i}: unreadable JSON line ({str(exc).split(';')[0]})")
                continue
            prompt = _parse_prompt(obj, "", _Sub(problems, f"{path}:{i}"))
            if prompt is not None:
                out.append(Prompt(prompt.id, prompt.text, prompt.token_ids, where=f"{path}:{i}"))
    return out


class _Sub(_Problems):
    """Problems found in another file (prompts_file) keep that file's name."""

    def __init__(self, parent: _Problems, location: str) -> None:
        self.parent, self.location = parent, location

    def add(self, where: str, message: str) -> None:
        self.parent.items.append(f"{self.location}: {message}")


def _range_problems(p: dict[str, Any]) -> list[str]:
    """Values vLLM would refuse only after the engine started (or take and
    misbehave on), checked in well under a second."""
    out = []
    for key in ("temperature", "top_p"):
        v = p[key]
        if math.isnan(v):
            out.append(f"{key} is NaN; write a number")
        elif math.isinf(v):
            out.append(f"{key} is {'-' if v < 0 else ''}.inf; write a finite number")
    if not out:
        if p["temperature"] < 0:
            out.append("temperature must be >= 0")
        if not 0 < p["top_p"] <= 1:
            out.append("top_p must be in (0, 1]")
    if p["top_k"] < -1:
        out.append("top_k must be -1, 0 (off) or positive")
    if p["max_tokens"] < 1:
        out.append("max_tokens must be >= 1")
    if p["min_tokens"] < 0:
        out.append("min_tokens must be >= 0")
    elif p["max_tokens"] >= 1 and p["min_tokens"] > p["max_tokens"]:
        out.append(f"min_tokens {p['min_tokens']} must be <= max_tokens {p['max_tokens']}")
    if p["n"] < 1:
        out.append("n must be >= 1")
    if not 0 <= p["logprobs"] <= MAX_LOGPROBS:
        out.append(f"logprobs (top-k recorded) must be in 0..{MAX_LOGPROBS}")
    if p["seed"] < 0:
        out.append("seed must be >= 0")
    elif p["seed"] + max(p["n"], 1) - 1 >= SEED_LIMIT:
        out.append(f"seed must be below 2**63 for every sample (samples take seeds s..s+n-1), got seed {p['seed']}"
                   + (f" with n {p['n']}" if p["n"] > 1 else ""))
    return out


def _parse_sampling(item: Any, where: str, problems: _Problems) -> SamplingConfig | None:
    if not isinstance(item, dict):
        problems.add(where, f"sampling config must be a mapping, got {type(item).__name__}")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        problems.add(where, "sampling config needs a non-empty string 'name'")
        return None
    bad = _surrogate(name)
    if bad:
        problems.add(where, f"sampling config name {name!r} holds {bad}")
        return None
    params = dict(SAMPLING_DEFAULTS)
    ok = True
    for key, value in item.items():
        if key == "name":
            continue
        kw = where.rsplit(":", 1)[0] + _line(item, key) if _line(item, key) else where
        if key not in _SAMPLING_TYPES:
            problems.add(kw, f"sampling config {name!r}: unknown key {key!r} "
                             f"(allowed: name, {', '.join(_SAMPLING_TYPES)})")
            ok = False
            continue
        types = _SAMPLING_TYPES[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.add(kw, f"sampling config {name!r}: {key} must be "
                             f"{'a number' if float in types else types[0].__name__}, got {value!r}")
            ok = False
            continue
        params[key] = float(value) if float in types else value
    if ok:
        for msg in _range_problems(params):
            problems.add(where, f"sampling config {name!r}: {msg}")
            ok = False
    return SamplingConfig(name=name, params=params, where=where) if ok else None


def _folder(base: Path, value: Any, what: str, where: str, problems: _Problems) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.add(where, f"weight_update.{what} must be a local path (string), got {value!r}")
        return None
    folder = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    if not folder.is_dir():
        problems.add(where, f"weight_update.{what}: model folder {folder} does not exist (relative paths resolve "
                            "against the suite's folder)")
        return None
    if not (folder / "config.json").is_file():
        problems.add(where, f"weight_update.{what}: model folder {folder} has no config.json")
        return None
    return folder


def _parse_weight_update(data: Any, where: str, base: Path, model: Path, problems: _Problems) -> WeightUpdateSpec | None:
    """`weight_update: {from, load, paths: [{via, pause, cache}], max_tokens, switch_at, atol, backend}`."""
    if not isinstance(data, dict):
        problems.add(where, f"'weight_update' must be a mapping with 'from' and 'paths', got {type(data).__name__}")
        return None
    n = len(problems.items)
    at = {k: (_line(data, k) or where) for k in data}
    for key in data:
        if key not in _UPDATE_KEYS:
            problems.add(at[key], f"weight_update: unknown key {key!r} (allowed: {', '.join(_UPDATE_KEYS)})")
    if "from" not in data:
        problems.add(where, "weight_update needs 'from': the folder of the old weights the engine starts on")
        source = None
    else:
        source = _folder(base, data["from"], "from", at["from"], problems)
    load = _folder(base, data["load"], "load", at["load"], problems) if data.get("load") is not None else model
    if source is not None and load is not None and source.resolve() == Path(load).resolve():
        problems.add(at["from"], "weight_update.from is the model the update loads, so the update changes nothing")
    numbers: dict[str, Any] = {}
    for key, types, ok, rule in (("max_tokens", (int,), lambda v: v >= 2, "an int >= 2"),
                                 ("switch_at", (int,), lambda v: v >= 1, "an int >= 1"),
                                 ("atol", (int, float), lambda v: math.isfinite(v) and v >= 0,
                                  "a finite number >= 0")):
        if data.get(key) is None:
            continue
        v = data[key]
        if not isinstance(v, types) or isinstance(v, bool) or not ok(v):
            problems.add(at[key], f"weight_update.{key} must be {rule}, got {v!r}")
        else:
            numbers[key] = v
    max_tokens = numbers.get("max_tokens", 16)
    if "switch_at" in numbers and numbers["switch_at"] >= max_tokens:
        problems.add(at["switch_at"], f"weight_update.switch_at {numbers['switch_at']} must be below max_tokens "
                                      f"({max_tokens})")
    backend = data.get("backend", "file")
    if not isinstance(backend, str) or not backend:
        problems.add(at.get("backend", where), f"weight_update.backend must be a string, got {backend!r}")
    raw = data.get("paths", [UPDATE_PATH_DEFAULT])
    paths: list[UpdatePathSpec] = []
    if not isinstance(raw, list) or not raw:
        problems.add(at.get("paths", where), "weight_update.paths must be a non-empty list of {via, pause, cache}")
        raw = []
    for i, item in enumerate(raw):
        pw = _line(raw, i) or at.get("paths", where)
        if not isinstance(item, dict):
            problems.add(pw, f"weight_update.paths[{i}] must be a mapping {{via, pause, cache}}, got "
                             f"{type(item).__name__}")
            continue
        spec = dict(UPDATE_PATH_DEFAULT, **item)
        bad = False
        for key, value in item.items():
            kw = _line(item, key) or pw
            allowed = {"via": UPDATE_VIAS, "pause": UPDATE_PAUSES, "cache": UPDATE_CACHE}.get(key)
            if allowed is None:
                problems.add(kw, f"weight_update.paths[{i}]: unknown key {key!r} (allowed: {', '.join(_PATH_KEYS)})")
                bad = True
            elif value not in allowed:
                problems.add(kw, f"weight_update.paths[{i}].{key} must be one of {', '.join(allowed)}, got {value!r}")
                bad = True
        if bad:
            continue
        path = UpdatePathSpec(spec["via"], spec["pause"], spec["cache"] == "clear", pw)
        if path in paths:
            problems.add(pw, f"weight_update.paths[{i}]: path {path.name} given twice")
            continue
        paths.append(path)
    if len(problems.items) > n or source is None or load is None:
        return None
    return WeightUpdateSpec(source=source, load=Path(load), paths=tuple(paths), max_tokens=max_tokens,
                            switch_at=numbers.get("switch_at"), atol=float(numbers.get("atol", 1e-4)),
                            backend=backend, where=where)


# ---------------------------------------------------------------- prompt lengths
def _context(model: Path, engine: Mapping[str, Any], source: str) -> ContextLength | None:
    """The positions a request may fill: engine.max_model_len when it is
    given (`source` says where), else what vLLM derives from the model's
    config.json. None when unknown: vLLM then judges at run time."""
    value = engine.get("max_model_len")
    if value is not None:  # anything but a plain positive int ("4k", -1: auto) is vLLM's to read
        return ContextLength(value, source) if _is_int(value) and value > 0 else None
    return model_max_len(model)


def _length_problems(prompts: Iterable[tuple[str, str, int]], sampling: Sequence[SamplingConfig],
                     context: ContextLength) -> list[str]:
    """(where, prompt id, length) triples against the context. A prompt must
    leave room for the one output token vLLM needs; teacher-forced scoring
    sends prompt + completion as one prompt, so prompt + max_tokens must
    leave that room too."""
    size, src = context.tokens, context.source
    longest = max(sampling, key=lambda c: int(c.params["max_tokens"]), default=None)
    out = []
    for where, pid, n in prompts:
        if n >= size:
            out.append(f"{where}: prompt {pid!r} has {n} token ids, over the {size - 1} a prompt may fill "
                       f"(max_model_len {size} from {src}, less one for the output)")
        elif longest is not None and n + int(longest.params["max_tokens"]) >= size:
            m = int(longest.params["max_tokens"])
            out.append(f"{where}: prompt {pid!r} has {n} token ids; with max_tokens {m} of sampling config "
                       f"{longest.name!r} that is {n + m}, over the {size - 1} a prompt and its completion may "
                       f"fill (max_model_len {size} from {src}, less one for the scoring step)")
    return out


def _prompt_location(suite_path: Path, p: Prompt) -> str:
    """suite.yaml:LINE for a suite prompt, prompts.jsonl:LINE for a prompts_file one."""
    return f"{suite_path}{p.where}" if not p.where or p.where.startswith(":") else p.where


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
    context = _context(suite.model, engine, source)
    if context is None:
        return
    located = {p.id: _prompt_location(suite.path, p) for p in suite.prompts}
    items = _length_problems(((located.get(pid, str(suite.path)), pid, len(ids)) for pid, ids in prompt_ids.items()),
                             suite.sampling, context)
    if items:
        raise BadInput(_one_message(items, "prompts too long"),
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
        raise BadInput(_one_message(items, "sampling configs rejected by vLLM"),
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
    problems = _Problems(path)
    if data is None:
        raise BadInput(f"{path}: the suite is empty", "start from examples/suite.yaml")
    if not isinstance(data, dict):
        raise BadInput(f"{path}:1: the suite must be a mapping, got {type(data).__name__}",
                       "start from examples/suite.yaml")
    for key in data:
        if key not in TOP_KEYS:
            problems.add(_line(data, key), f"unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    base = path.parent
    model = data.get("model")
    model_path = base
    model_ok = False
    if not isinstance(model, str) or not model:
        problems.add(_line(data, "model") or ":1", "'model' must be a local path (string)")
    else:
        model_path = (base / model).resolve() if not Path(model).is_absolute() else Path(model)
        if not need_model:
            pass
        elif not model_path.is_dir() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
            # A hub id: the gate never downloads (the action runs HF_HUB_OFFLINE=1), so say how to fetch it.
            problems.add(_line(data, "model"), f"model {model!r} is not a local folder ({model_path} does not "
                                              f"exist) and looks like a Hugging Face hub id: the gate reads local "
                                              f"folders only; fetch it onto the runner first (hf download {model} "
                                              f"--revision COMMIT --local-dir /models/{model.rsplit('/', 1)[-1]}) "
                                              f"and set model: to that folder")
        elif not model_path.is_dir():
            problems.add(_line(data, "model"), f"model folder {model_path} does not exist "
                                              "(a local path; relative paths resolve against the suite's folder)")
        elif not (model_path / "config.json").is_file():
            problems.add(_line(data, "model"), f"model folder {model_path} has no config.json")
        else:
            model_ok = True
    engine = data.get("engine", {}) or {}
    if not isinstance(engine, dict):
        problems.add(_line(data, "engine"), f"'engine' must be a mapping of vLLM engine args, got "
                                            f"{type(engine).__name__}")
        engine = {}
    if "model" in engine:
        problems.add(_line(engine, "model"), "engine.model is not allowed; set the top-level 'model'")
    engine_lines = {k: f"{path}{_line(engine, k)}" for k in engine}
    prompts: list[Prompt] = []
    raw_prompts = data.get("prompts")
    if raw_prompts is not None:
        if not isinstance(raw_prompts, list):
            problems.add(_line(data, "prompts"), "'prompts' must be a list of {id, text} or {id, token_ids}")
        else:
            for i, item in enumerate(raw_prompts):
                p = _parse_prompt(item, _line(raw_prompts, i), problems)
                if p is not None:
                    prompts.append(p)
    if "prompts_file" in data:
        pf = data["prompts_file"]
        if not isinstance(pf, str) or not pf:
            problems.add(_line(data, "prompts_file"), "'prompts_file' must be a path to a JSONL file")
        else:
            real = outside(base / pf, workspace_root()) if strict_paths else None
            if real is not None:
                problems.add(_line(data, "prompts_file"), f"prompts_file {pf} resolves to {real}, outside the "
                                                          f"workspace {workspace_root()} (--strict-paths)")
            else:
                prompts.extend(_load_prompts_file(base / pf, problems, _line(data, "prompts_file")))
    seen: dict[str, str] = {}
    for p in prompts:
        if p.id in seen:
            problems.add(p.where if p.where.startswith(":") else "", f"duplicate prompt id {p.id!r} "
                         f"(also at {seen[p.id] if not seen[p.id].startswith(':') else str(path) + seen[p.id]})")
        else:
            seen[p.id] = p.where
    if not prompts and not any("prompt" in i for i in problems.items):
        problems.add(_line(data, "prompts") or "", "the suite has no prompts (add 'prompts' or 'prompts_file')")
    sampling: list[SamplingConfig] = []
    raw_sampling = data.get("sampling")
    if raw_sampling is None or raw_sampling == []:
        problems.add(_line(data, "sampling") or "", "the suite has no sampling configs (add 'sampling')")
    elif not isinstance(raw_sampling, list):
        problems.add(_line(data, "sampling"), "'sampling' must be a list of named configs")
    else:
        names: set[str] = set()
        for i, item in enumerate(raw_sampling):
            s = _parse_sampling(item, _line(raw_sampling, i), problems)
            if s is None:
                continue
            if s.name in names:
                problems.add(_line(raw_sampling, i), f"duplicate sampling config name {s.name!r}")
            names.add(s.name)
            sampling.append(s)
    policy = data.get("policy")
    if policy is not None:
        try:
            parse_policy(policy, f"{path}{_line(data, 'policy')}", configs={s.name for s in sampling})
        except BadInput as exc:
            problems.items.append(exc.what)
    context = None
    if model_ok:
        try:
            context = _context(model_path, engine, f"engine.max_model_len at {engine_lines.get('max_model_len')}")
        except BadInput as exc:  # a broken config.json
            problems.items.append(exc.what)
    if context is not None:
        known = [(_prompt_location(path, p), p.id, len(p.token_ids)) for p in prompts if p.token_ids is not None]
        problems.items.extend(_length_problems(known, sampling, context))
    update = None
    if data.get("weight_update") is not None:
        update = _parse_weight_update(data["weight_update"], _line(data, "weight_update"), base, model_path, problems)
    name = data.get("name", path.stem)
    if isinstance(name, str) and _surrogate(name):
        problems.add(_line(data, "name"), f"'name' holds {_surrogate(name)}")
    problems.raise_if_any()
    return Suite(path=path, model=model_path, engine=dict(engine), prompts=tuple(prompts),
                 sampling=tuple(sampling), policy=policy, name=str(name), engine_lines=engine_lines,
                 weight_update=update)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prompt_hash(token_ids: list[int]) -> str:
    return _sha(list(token_ids))[:16]


def workload_hash(prompt_ids: dict[str, list[int]], sampling: dict[str, dict[str, Any]]) -> str:
    """Identity of what is run: prompt token ids and sampling configs only.
    Editing `engine:` or `policy:` never makes a golden stale."""
    return _sha({"prompts": {k: list(v) for k, v in sorted(prompt_ids.items())},
                 "sampling": dict(sorted(sampling.items()))})[:16]
