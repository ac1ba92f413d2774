"""Is this golden the suite's, and what of it is compared: the golden read
once for a replay (its header and its request ids, the model checked), the
suite matched against it (changed sampling configs or prompts are a stale
golden; new and unused ones are listed), and the command that re-records it.
Used by `check` and `merge`."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gate.core.errors import BadInput, StaleGolden, command_line
from gate.core.identity import model_differences, model_identity, model_vocab_size, same_model
from gate.core.trace import Manifest, read_trace, trace_path
from gate.run.replay import check_vocab, prompt_where
from gate.run.suite import Suite, prompt_hash

__all__ = ["Golden", "Workload", "read_golden", "match_workload", "golden_where", "rerecord_command"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    include: set[tuple]
    new: list[str]
    unused: list[str]


def rerecord_command(suite: Suite, golden: Manifest, golden_path: Path, suite_arg: Path | str) -> str:
    """The command that re-records the golden: `record --update` into it only
    when it is this suite's golden; another suite's golden is never to be
    overwritten, so then a new folder."""
    other = golden.suite.get("name")
    if other and other != suite.name:
        new = golden_path.parent / f"{suite.name or 'suite'}-golden"
        return (f"{command_line('record', '--suite', suite_arg, '--out', new)} (a new folder: {golden_path} is the "
                f"golden of suite {other!r}, not of {suite.name!r})")
    return command_line("record", "--suite", suite_arg, "--out", golden_path, "--update")


def _short(names: Iterable[str], limit: int = 4) -> str:
    names = sorted(names)
    return ", ".join(map(repr, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _golden_coverage(suite: Suite, golden: Manifest, golden_path: Path, suite_arg: Path | str) -> None:
    """Before the engine starts: a golden that shares no (config, prompt id)
    with the suite is refused, naming what differs; a partial overlap (a user
    added prompts or configs) goes on, saying what the golden does not cover."""
    g_configs, g_prompts = set(golden.suite.get("sampling") or {}), set(golden.suite.get("prompts") or {})
    s_configs, s_prompts = set(suite.sampling_by_name), {p.id for p in suite.prompts}
    configs, prompts = s_configs & g_configs, s_prompts & g_prompts
    other = golden.suite.get("name")
    named = f"suite {other!r}" if other else "an unnamed suite"
    if not configs or not prompts:
        differ = []
        if other and other != suite.name:
            differ.append(f"it was recorded from {named}")
        differ.append(f"configs {_short(g_configs)} vs {_short(s_configs)}" if not configs
                      else f"shared configs {_short(configs)}")
        differ.append(f"prompts {_short(g_prompts)} vs {_short(s_prompts)}" if not prompts
                      else f"shared prompts {_short(prompts)}")
        raise BadInput(f"--golden {golden_path} shares no (config, prompt id) with suite {suite.name!r} "
                       f"({suite_arg}): {'; '.join(differ)}",
                       f"pass the golden recorded from {suite_arg}, or record one into a new folder: "
                       f"{command_line('record', '--suite', suite_arg, '--out', 'NEW_GOLDEN_DIR')}")
    if other and other != suite.name:
        log.warning("--golden %s was recorded from %s, not suite %r: only the %d configs and %d prompts they share "
                    "are compared", golden_path, named, suite.name, len(configs), len(prompts))
    uncovered = [f"{len(s_prompts - g_prompts)} prompts ({_short(s_prompts - g_prompts)})"] if s_prompts - g_prompts \
        else []
    uncovered += [f"{len(s_configs - g_configs)} configs ({_short(s_configs - g_configs)})"] \
        if s_configs - g_configs else []
    if uncovered:
        log.warning("the golden does not cover %s of suite %r: they are not run or compared (re-record to cover "
                    "them: %s)", " and ".join(uncovered), suite.name, rerecord_command(suite, golden, golden_path, suite_arg))


def match_workload(suite: Suite, golden: Manifest, golden_path: Path, suite_arg: Path | str,
                    keys: list[tuple]) -> Workload:
    _golden_coverage(suite, golden, golden_path, suite_arg)
    rerecord = rerecord_command(suite, golden, golden_path, suite_arg)
    g_sampling: dict[str, dict] = golden.suite.get("sampling") or {}
    g_prompts: dict[str, dict] = golden.suite.get("prompts") or {}
    s_sampling = suite.sampling_by_name
    for name, params in g_sampling.items():
        if name in s_sampling and s_sampling[name].params != params:
            changed = sorted(k for k in set(params) | set(s_sampling[name].params)
                             if params.get(k) != s_sampling[name].params.get(k))
            raise StaleGolden(f"sampling config {name!r} changed since the golden was recorded ({', '.join(changed)})",
                              f"re-record: {rerecord}")
    for p in suite.prompts:
        g = g_prompts.get(p.id)
        if g is None:
            continue
        if p.text is not None and g.get("text") is not None and p.text != g["text"]:
            raise StaleGolden(f"prompt {p.id!r} text changed since the golden was recorded",
                              f"re-record: {rerecord}")
        if p.token_ids is not None and prompt_hash(list(p.token_ids)) != g.get("sha256"):
            raise StaleGolden(f"prompt {p.id!r} token ids changed since the golden was recorded",
                              f"re-record: {rerecord}")
        if (p.text is None) != (g.get("text") is None):
            raise StaleGolden(f"prompt {p.id!r} switched between text and token_ids since the golden was "
                              "recorded", f"re-record: {rerecord}")
    suite_ids = {p.id for p in suite.prompts}
    include = {k for k in keys if k[0] in s_sampling and k[1] in suite_ids}
    new = sorted(f"prompt {i}" for i in suite_ids - set(g_prompts)) + sorted(
        f"config {n}" for n in set(s_sampling) - set(g_sampling))
    unused = sorted(f"prompt {i}" for i in set(g_prompts) - suite_ids) + sorted(
        f"config {n}" for n in set(g_sampling) - set(s_sampling))
    return Workload(include=include, new=new, unused=unused)


@dataclass(frozen=True)
class Golden:
    """A golden, read once for a replay: its header and its requests (ids only)."""
    path: Path
    manifest: Manifest
    prompts: dict[str, list[int]]
    completions: dict[tuple, list[int]]


def read_golden(suite: Suite, path: Path, suite_arg: Path | str,
                 model_id: dict[str, Any] | None | bool = True) -> Golden:
    """`model_id`: the suite model's identity (True: hash its files now;
    None: no model here, as in merge, whose shards each checked it)."""
    reader = read_trace(path)
    golden = reader.manifest
    if golden.kind != "golden":
        raise BadInput(f"{trace_path(path)}: trace kind is {golden.kind!r}, not a golden",
                       "pass a folder written by 'parity-gate record'")
    if model_id is True:
        model_id = model_identity(suite.model)
    if model_id is not None and not same_model(golden.model, model_id):
        raise StaleGolden(f"golden was recorded from model {golden.model.get('id')} ({golden.model.get('name')}), "
                          f"the suite's model is {model_id['id']} ({model_id['name']}): their "
                          f"{' and '.join(model_differences(golden.model, model_id))} differ",
                          f"point the suite at the golden's model, or re-record: "
                          f"{rerecord_command(suite, golden, path, suite_arg)}")
    vocab = model_vocab_size(suite.model) if model_id is not None else None
    prompts: dict[str, list[int]] = {}
    completions: dict[tuple, list[int]] = {}
    for rec in reader.records():
        prompts[rec.prompt_id] = list(rec.prompt_token_ids)
        completions[rec.key] = list(rec.completion_token_ids)
        check_vocab(list(rec.prompt_token_ids) + list(rec.completion_token_ids), vocab,
                    f"{trace_path(path)} record {rec.key}")
    if not (golden.batch_plan or {}).get("calls"):
        raise BadInput(f"{trace_path(path)}: golden has no batch plan", "re-record it with parity-gate record")
    return Golden(path, golden, prompts, completions)


def golden_where(suite: Suite, golden_path: Path, prompt_id: str) -> str:
    """Where a replayed prompt is written: the suite's line, else the golden."""
    p = next((p for p in suite.prompts if p.id == prompt_id), None)
    return prompt_where(suite, p) if p is not None else f"{trace_path(golden_path)}: prompt {prompt_id!r}"
