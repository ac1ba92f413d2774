"""A record line checked and turned into a `Record`.

The record model's rules (gate/core/models.py Record), as checks that run at C speed
on whole lists: a generic validator visiting every number would slow
parsing several-fold. array('Q', ids) refuses anything but non-negative
ints below 2**64; sum(values, 0.0) refuses anything but numbers, and its
total is finite unless a +inf (or a sum of huge values) is there. Neither
tells a bool from an int, so a line holding the JSON literals true/false
(records have no boolean key; a token string may say "true") takes the
exact path, set(map(type, ...)); the reader finds those literals in
what is left of the line once digits and brackets are deleted (a few
hundred bytes). When a check fails, the model validates the line
to say exactly where; tests/adversarial/test_trace_properties.py
holds the checks and the model to the same answer."""
from __future__ import annotations

import math
import sys
from array import array
from functools import reduce
from operator import iadd, length_hint
from typing import Any

from gate.core.errors import BadInput
from gate.core.trace_format import PATHS, REDO, Record, Scores, hint_for

__all__ = ["record_ok", "record_from_json", "RECORD_KEYS", "SCORES_KEYS"]

_NONE = type(None)
_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_ROW = frozenset({list, _NONE})
_STR = frozenset({str})
_MSB = 7 if sys.byteorder == "little" else 0   # the top byte of each packed uint64
_FLOAT_MAX = 1.7976931348623157e308
_PATHS = frozenset(PATHS)
# the keys of models.Scores and models.Record (tests/unit/test_models.py holds them equal)
SCORES_KEYS = frozenset({"path", "logprobs", "top_ids", "top_logprobs", "completion_token_ids"})
RECORD_KEYS = frozenset({"config", "prompt_id", "sample", "seed", "prompt_token_ids", "completion_token_ids",
                          "prompt_tokens", "completion_tokens", "finish_reason", "sampler", "forced", "own"})


def _ids_ok(ids: list, exact: bool) -> bool:
    """Non-negative ints that fit numpy's int64 (the comparison's dtype)."""
    if exact and not set(map(type, ids)) <= _INT:
        return False
    try:
        packed = array("Q", ids)
    except (TypeError, OverflowError):
        return False
    return packed.tobytes()[_MSB::8].isascii()  # top bit clear everywhere: all < 2**63


def _numbers_ok(values: list, exact: bool) -> bool:
    """Ints or floats; no +inf (1e400 reads as +inf) and no int beyond the
    float range. NaN cannot get here: the parser refuses the NaN literal."""
    if not exact:
        try:
            total = sum(values, 0.0)
        except (TypeError, OverflowError):
            return False
        if total == total and total != math.inf:
            return True
    elif not set(map(type, values)) <= _NUMBER:
        return False
    return math.inf not in values and all(-_FLOAT_MAX <= x <= _FLOAT_MAX for x in values if type(x) is int)


def _logprobs_ok(lps: Any, exact: bool) -> bool:
    if type(lps) is not list:
        return False
    nones = lps.count(None)
    if nones == 1 and lps[0] is None:  # teacher-forced: position 0 has no logprob
        return _numbers_ok(lps[1:], exact)
    return _numbers_ok([x for x in lps if x is not None] if nones else lps, exact)


def _rows_ok(rows: Any, ids: bool, exact: bool) -> bool:
    """top_ids / top_logprobs: null, or a list whose rows are null or lists."""
    if rows is None:
        return True
    if type(rows) is not list or not set(map(type, rows)) <= _ROW:
        return False
    flat = reduce(iadd, filter(None, rows), [])  # one list += per row: cheaper than chain for short rows
    return _ids_ok(flat, exact) if ids else _numbers_ok(flat, exact)


def _scores_ok(s: Any, open_keys: bool, exact: bool) -> bool:
    if s is None:
        return True
    if type(s) is not dict or (not open_keys and not s.keys() <= SCORES_KEYS) or s.get("path") not in _PATHS:
        return False
    cids = s.get("completion_token_ids")
    return (_logprobs_ok(s.get("logprobs"), exact) and _rows_ok(s.get("top_ids"), True, exact)
            and _rows_ok(s.get("top_logprobs"), False, exact)
            and (cids is None or (type(cids) is list and _ids_ok(cids, exact))))


def _strs_ok(xs: Any) -> bool:
    return xs is None or (type(xs) is list and set(map(type, xs)) <= _STR)


def record_ok(o: Any, open_keys: bool, exact: bool) -> bool:
    """True when `o` is a valid models.Record. `exact`: tell
    bools from ints (needed when the line holds a true/false literal)."""
    if type(o) is not dict or (not open_keys and not o.keys() <= RECORD_KEYS):
        return False
    sample, seed, reason = o.get("sample"), o.get("seed"), o.get("finish_reason")
    prompt_ids, completion_ids = o.get("prompt_token_ids"), o.get("completion_token_ids")
    return (type(o.get("config")) is str and type(o.get("prompt_id")) is str
            and type(sample) is int and sample >= 0 and (seed is None or type(seed) is int)
            and (reason is None or type(reason) is str)
            and type(prompt_ids) is list and _ids_ok(prompt_ids, exact)
            and type(completion_ids) is list and _ids_ok(completion_ids, exact)
            and _strs_ok(o.get("prompt_tokens")) and _strs_ok(o.get("completion_tokens"))
            and _scores_ok(o.get("sampler"), open_keys, exact) and _scores_ok(o.get("forced"), open_keys, exact)
            and _scores_ok(o.get("own"), open_keys, exact))


def _scores_from_json(obj: dict[str, Any] | None, where: str, expected_len: int) -> Scores | None:
    """Lengths the schema cannot state: one logprob per scored token, and
    top-k rows that pair up."""
    if obj is None:
        return None
    path, logprobs = obj["path"], obj["logprobs"]
    if len(logprobs) != expected_len:
        raise BadInput(f"{where}: {path} scores have {len(logprobs)} logprobs for {expected_len} tokens", REDO)
    top_ids, top_lps = obj.get("top_ids"), obj.get("top_logprobs")
    if top_ids is not None or top_lps is not None:
        if top_ids is None or top_lps is None or len(top_ids) != expected_len or len(top_lps) != expected_len:
            raise BadInput(f"{where}: {path} top-k lists do not match the {expected_len} tokens", REDO)
        widths_ids, widths_lps = list(map(length_hint, top_ids)), list(map(length_hint, top_lps))
        if widths_ids != widths_lps:
            i = next(i for i, (a, b) in enumerate(zip(widths_ids, widths_lps)) if a != b)
            raise BadInput(f"{where}: {path} top_ids row {i} holds {widths_ids[i]} ids but top_logprobs row {i} "
                           f"holds {widths_lps[i]} logprobs", REDO)
    return Scores(path=path, logprobs=logprobs, top_ids=top_ids, top_logprobs=top_lps,
                  completion_token_ids=obj.get("completion_token_ids"))


def record_from_json(obj: Any, where: str, newer: bool = False, exact: bool = True) -> Record:
    """`exact=False` is the reader's fast path for a line without true/false literals."""
    if not record_ok(obj, newer, exact):
        from gate.core import models, validation  # only for a line the fast checks refused: the model says where
        problem = validation.problem(models.Record, obj, "record", open_objects=newer)
        problem = problem or "record does not match the trace schema"
        raise BadInput(f"{where}: {problem}", hint_for(problem))
    prompt_ids, completion_ids = obj["prompt_token_ids"], obj["completion_token_ids"]
    forced_raw, own_raw = obj.get("forced"), obj.get("own")
    forced_completion = forced_raw.get("completion_token_ids") if forced_raw else None
    if own_raw and own_raw.get("completion_token_ids") not in (None, completion_ids):
        raise BadInput(f"{where}: 'own' scores name completion ids other than the record's own",
                       "'own' scores the record's completion_token_ids; leave its completion_token_ids out")
    n_prompt = len(prompt_ids)
    return Record(
        config=obj["config"], prompt_id=obj["prompt_id"], sample=obj["sample"], seed=obj.get("seed"),
        prompt_token_ids=prompt_ids, completion_token_ids=completion_ids,
        sampler=_scores_from_json(obj.get("sampler"), where, len(completion_ids)),
        forced=_scores_from_json(forced_raw, where, n_prompt + len(
            forced_completion if forced_completion is not None else completion_ids)),
        own=_scores_from_json(own_raw, where, n_prompt + len(completion_ids)),
        prompt_tokens=obj.get("prompt_tokens"), completion_tokens=obj.get("completion_tokens"),
        finish_reason=obj.get("finish_reason"))
