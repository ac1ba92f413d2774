"""The suite file: which model, which engine args, which prompts, which
sampling configs, which thresholds. Validated whole before anything runs;
every problem is named with file:line (docs/suite-format.md)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gate.errors import BadInput

__all__ = ["Prompt", "SamplingConfig", "Suite", "load_suite", "load_yaml", "parse_engine_arg",
           "workload_hash", "SAMPLING_DEFAULTS"]

TOP_KEYS = {"name", "description", "model", "engine", "prompts", "prompts_file", "sampling", "policy"}
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "seed": 0, "n": 1, "logprobs": 5,
    "min_tokens": 0, "ignore_eos": False,
}
_SAMPLING_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float), "top_p": (int, float), "top_k": (int,), "max_tokens": (int,), "seed": (int,),
    "n": (int,), "logprobs": (int,), "min_tokens": (int,), "ignore_eos": (bool,),
}
MAX_LOGPROBS = 20  # vLLM's default max_logprobs


class _Mapping(dict):
    lines: dict[Any, int]


class _List(list):
    lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and list item."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark)
            if isinstance(key, (str, int)):
                seen[key] = key_node.start_mark.line + 1
        m = _Mapping(super().construct_mapping(node, deep=True))
        m.lines = seen
        return m

    def construct_sequence(self, node, deep=False):  # type: ignore[override]
        s = _List(super().construct_sequence(node, deep=True))
        s.lines = [child.start_mark.line + 1 for child in node.value]
        return s


# Messages say "got list", never "got _List".
_Mapping.__name__ = _Mapping.__qualname__ = "dict"
_List.__name__ = _List.__qualname__ = "list"

_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence)


def load_yaml(path: Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found", "check the path (relative paths resolve against the cwd)") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not a YAML file", "pass the suite/policy file itself") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})", "check the file's permissions") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise BadInput(f"{path}{line}: malformed YAML: {exc.problem or exc.context}",
                       "fix the YAML syntax at that line") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: malformed YAML: {exc}", "fix the YAML syntax") from None


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

    @property
    def n(self) -> int:
        return int(self.params["n"])

    @property
    def logprobs(self) -> int:
        return int(self.params["logprobs"])

    def seeds(self) -> list[int]:
        """`n: k` with `seed: s` expands into k requests with seeds s, s+1, ..."""
        return [int(self.params["seed"]) + i for i in range(self.n)]


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

    @property
    def sampling_by_name(self) -> dict[str, SamplingConfig]:
        return {s.name: s for s in self.sampling}

    def with_engine_overrides(self, overrides: dict[str, Any]) -> "Suite":
        engine = dict(self.engine)
        engine.update(overrides)
        return Suite(self.path, self.model, engine, self.prompts, self.sampling, self.policy, self.name,
                     self.engine_lines)


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
        if len(self.items) == 1:
            raise BadInput(self.items[0], "fix the suite file (see docs/suite-format.md)")
        raise BadInput(f"{len(self.items)} problems in the suite: " + "; ".join(self.items),
                       "fix the suite file (see docs/suite-format.md)")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_prompt(item: Any, where: str, problems: _Problems) -> Prompt | None:
    if not isinstance(item, dict):
        problems.add(where, f"prompt must be a mapping with 'id' and 'text' or 'token_ids', got {type(item).__name__}")
        return None
    unknown = set(item) - {"id", "text", "token_ids"}
    if unknown:
        problems.add(where, f"unknown prompt keys {sorted(unknown)} (allowed: id, text, token_ids)")
    pid = item.get("id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
        problems.add(where, f"prompt 'id' must be a non-empty string, got {pid!r}")
        return None
    pid = str(pid)  # `id: 7` is the prompt '7' everywhere, messages included
    has_text, has_ids = "text" in item, "token_ids" in item
    if has_text == has_ids:
        problems.add(where, f"prompt {pid!r} needs exactly one of 'text' or 'token_ids'")
        return None
    if has_text:
        if not isinstance(item["text"], str) or not item["text"]:
            problems.add(where, f"prompt {pid!r}: 'text' must be a non-empty string")
            return None
        return Prompt(id=str(pid), text=item["text"], where=where)
    ids = item["token_ids"]
    if not isinstance(ids, list) or not ids or not all(_is_int(t) and t >= 0 for t in ids):
        problems.add(where, f"prompt {pid!r}: 'token_ids' must be a non-empty list of non-negative integers")
        return None
    return Prompt(id=str(pid), token_ids=tuple(ids), where=where)


def _load_prompts_file(path: Path, problems: _Problems, where: str) -> list[Prompt]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        problems.add(where, f"prompts_file {path} not found (relative paths resolve against the suite's folder)")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(where, f"prompts_file {path} is not readable: {exc}")
        return []
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.items.append(f"{path}:{i}: malformed JSON line ({exc.msg})")
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


def _parse_sampling(item: Any, where: str, problems: _Problems) -> SamplingConfig | None:
    if not isinstance(item, dict):
        problems.add(where, f"sampling config must be a mapping, got {type(item).__name__}")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        problems.add(where, "sampling config needs a non-empty string 'name'")
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
        checks = [
            (params["temperature"] >= 0, "temperature must be >= 0"),
            (0 < params["top_p"] <= 1, "top_p must be in (0, 1]"),
            (params["top_k"] >= -1, "top_k must be -1, 0 (off) or positive"),
            (params["max_tokens"] >= 1, "max_tokens must be >= 1"),
            (params["n"] >= 1, "n must be >= 1"),
            (0 <= params["logprobs"] <= MAX_LOGPROBS, f"logprobs (top-k recorded) must be in 0..{MAX_LOGPROBS}"),
            (params["seed"] >= 0, "seed must be >= 0"),
        ]
        for good, msg in checks:
            if not good:
                problems.add(where, f"sampling config {name!r}: {msg}")
                ok = False
    return SamplingConfig(name=name, params=params) if ok else None


def load_suite(path: Path) -> Suite:
    path = Path(path)
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
    if not isinstance(model, str) or not model:
        problems.add(_line(data, "model") or ":1", "'model' must be a local path (string)")
    else:
        model_path = (base / model).resolve() if not Path(model).is_absolute() else Path(model)
        if not model_path.is_dir():
            problems.add(_line(data, "model"), f"model folder {model_path} does not exist "
                                              "(a local path; relative paths resolve against the suite's folder)")
        elif not (model_path / "config.json").is_file():
            problems.add(_line(data, "model"), f"model folder {model_path} has no config.json")
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
        from gate.policy import parse_policy  # validates now, so a bad policy fails before the engine starts

        try:
            parse_policy(policy, f"{path}{_line(data, 'policy')}", configs={s.name for s in sampling})
        except BadInput as exc:
            problems.items.append(exc.what)
    name = data.get("name", path.stem)
    problems.raise_if_any()
    return Suite(path=path, model=model_path, engine=dict(engine), prompts=tuple(prompts),
                 sampling=tuple(sampling), policy=policy, name=str(name), engine_lines=engine_lines)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prompt_hash(token_ids: list[int]) -> str:
    return _sha(list(token_ids))[:16]


def sampling_hash(config: SamplingConfig) -> str:
    return _sha(config.params)[:16]


def workload_hash(prompt_ids: dict[str, list[int]], sampling: dict[str, dict[str, Any]]) -> str:
    """Identity of what is run: prompt token ids and sampling configs only.
    Editing `engine:` or `policy:` never makes a golden stale."""
    return _sha({"prompts": {k: list(v) for k, v in sorted(prompt_ids.items())},
                 "sampling": dict(sorted(sampling.items()))})[:16]
