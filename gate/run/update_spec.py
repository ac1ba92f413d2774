"""`weight_update:` in a suite (docs/suite-format.md, docs/weight-update.md):
the update paths `check` runs after its comparison."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.run.problems import Problems, line_of

__all__ = ["UpdatePathSpec", "WeightUpdateSpec", "parse_weight_update", "UPDATE_VIAS", "UPDATE_PAUSES",
           "UPDATE_CACHE", "UPDATE_PATH_DEFAULT"]

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
    max_tokens: int | None = None  # None: the machine's default (weight_update_inflight.DEFAULT_MAX_TOKENS)
    switch_at: int | None = None
    atol: float = 1e-4
    backend: str = "file"
    where: str = field(default="", compare=False)


def _folder(base: Path, value: Any, what: str, where: str, problems: Problems) -> Path | None:
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


def parse_weight_update(data: Any, where: str, base: Path, model: Path, problems: Problems) -> WeightUpdateSpec | None:
    """`weight_update: {from, load, paths: [{via, pause, cache}], max_tokens, switch_at, atol, backend}`."""
    if not isinstance(data, dict):
        problems.add(where, f"'weight_update' must be a mapping with 'from' and 'paths', got {type(data).__name__}")
        return None
    n = len(problems.items)
    at = {k: (line_of(data, k) or where) for k in data}
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
    max_tokens = numbers.get("max_tokens")  # None: the machine's default, checked against switch_at at run time
    if "switch_at" in numbers and max_tokens is not None and numbers["switch_at"] >= max_tokens:
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
        pw = line_of(raw, i) or at.get("paths", where)
        if not isinstance(item, dict):
            problems.add(pw, f"weight_update.paths[{i}] must be a mapping {{via, pause, cache}}, got "
                             f"{type(item).__name__}")
            continue
        spec = dict(UPDATE_PATH_DEFAULT, **item)
        bad = False
        for key, value in item.items():
            kw = line_of(item, key) or pw
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
