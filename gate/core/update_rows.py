"""The records of a weight update with requests in flight (docs/weight-update.md), typed: what the update and
fresh workers return (run/async_engine), what the judge makes of one path (studies/update_judge) and the
weight_update.json that holds them. TypedDicts, so they stay the plain dicts that cross the worker processes
as JSON and are written as they are."""
from __future__ import annotations

from typing import TypedDict

__all__ = ["PromptInput", "RequestOutput", "InFlightRun", "UpdateRun", "Continuation", "ContinuationPlan",
           "FreshPlan", "FreshRun", "PathSpec", "Comparison", "Agreement", "UpdateCheck", "UpdateDiagnosis",
           "AfterSwitch", "TokenWeights", "InFlightRequest", "Staleness", "PathVerdict", "WeightUpdateResult"]


# --- what the workers return ----------------------------------------------------------------------------------------

class PromptInput(TypedDict, total=False):
    """One prompt for the update worker: its token ids, or its text (tokenized by the engine)."""
    token_ids: list[int]
    text: str


class _Tokens(TypedDict):
    token_ids: list[int]
    logprobs: list[float]


class RequestOutput(_Tokens, total=False):
    """One request's tokens and their logprobs. An engine's output has all five keys (`top2_gap`: per position,
    best minus second-best logprob; `alternatives`: per position, the other tokens vLLM returned (its top
    `logprobs`), best first, each with its logprob; `finish_reason` "abort" when none came); a prefix or tail cut
    from one for comparison has the tokens and logprobs, and the top-2 gaps and alternatives where a near tie is
    looked for."""
    top2_gap: list[float | None] | None
    alternatives: list[list[tuple[int, float]]] | None
    finish_reason: str


class InFlightRun(TypedDict, total=False):
    """One update path run with requests in flight: what the client had seen before the pause and at the update,
    the update call and its seconds, the in-flight outputs, then (`post`) the same prompts as new requests.
    `paused` only when the path pauses, `prefix_cache_reset` only for `none` with the cache cleared; every
    other key is always there once the worker returns."""
    seen_before_pause: list[int]
    paused: bool
    seen_at_update: list[int]
    mechanism: str
    update_seconds: float
    prefix_cache_reset: bool
    seen_after_update: list[int]
    outputs: list[RequestOutput]
    post: list[RequestOutput]
    path: str


class UpdateRun(TypedDict):
    """The update worker's result: the tokenized prompts, the old weights' reference, one run per path."""
    prompts: list[list[int]]
    old: list[RequestOutput]
    runs: list[InFlightRun]
    engine_start_seconds: float
    seconds: float
    vllm_version: str


class Continuation(TypedDict):
    """An in-flight request the fresh engine continues: its index and the tokens it had under the old weights."""
    request: int
    prefix: list[int]


# What the fresh engine runs for one path: the continuations, and every in-flight request's tokens to score
# (`continue` is a keyword, hence the functional form).
ContinuationPlan = TypedDict("ContinuationPlan", {"continue": list[Continuation], "score": list[list[int]]})


class FreshPlan(TypedDict):
    """The fresh engine's answer to one plan: the continuations, the post-update batch, the scored tokens."""
    continuations: list[RequestOutput]
    post: list[RequestOutput]
    scores: list[list[float | None]]


class FreshRun(TypedDict):
    """The fresh worker's result, one entry per path."""
    plans: list[FreshPlan]
    seconds: float


# --- what the judge makes of them -----------------------------------------------------------------------------------

class PathSpec(TypedDict):
    """One update path, as a suite declares it."""
    via: str
    pause: str
    clear_cache: bool


class Comparison(TypedDict):
    """Tokens and logprobs of an output against its reference, over their common prefix."""
    tokens_equal: bool
    matching_tokens: int
    tokens: int
    reference_tokens: int
    max_abs_diff: float
    diffs: list[float]


class Agreement(TypedDict):
    """Outputs against their references: whether they agree, each comparison, and how many parted at a near tie."""
    ok: bool
    cmps: list[Comparison]
    near_ties: int
    note: str
    tokens_compared: int
    max_abs_diff: float


class _UpdateCheck(TypedDict):
    id: str
    status: str
    tokens_compared: int
    detail: str


class UpdateCheck(_UpdateCheck, total=False):
    """One check of a path, with its evidence; `max_abs_diff` where logprobs were compared."""
    max_abs_diff: float


class UpdateDiagnosis(TypedDict):
    """Why a path fails: a kind (no_effect, stale_prefix_cache, partial_update, not_in_flight,
    token_lost_at_resume, token_repeated_at_resume, in_flight)."""
    kind: str
    summary: str


class AfterSwitch(TypedDict):
    """A continued request's tokens after the switch against the fresh engine's continuation; `shift` +1 when
    they run one token ahead of it (a token lost at the resume), -1 one behind (repeated), else 0."""
    tokens: int
    matching_new_reference: int
    max_abs_diff: float
    shift: int


class TokenWeights(TypedDict):
    """One in-flight token: the weights it was made under, its logprob, the new weights' logprob of it."""
    weights: str
    logprob: float
    new_weights_logprob: float | None
    abs_diff: float | None


class _InFlightRequest(TypedDict):
    request: int
    tokens: int
    finish_reason: str
    seen_at_update: int
    switched_at: int | None
    old_weights_tokens: int
    old_prefix_matches_old_reference: bool
    old_prefix_max_abs_diff: float


class InFlightRequest(_InFlightRequest, total=False):
    """One in-flight request: where it switched weights; `after_switch` when the fresh engine continued it,
    `per_token` when its tokens were scored."""
    after_switch: AfterSwitch
    per_token: list[TokenWeights]


class Staleness(TypedDict):
    """In-flight tokens against the new weights' logprobs (reported; `expected` false: must be 0)."""
    tokens_old_weights: int
    tokens_new_weights: int
    after_switch_max_abs_diff: float
    after_switch_mean_abs_diff: float
    after_switch_k3: float
    rollout_k3: float
    expected: bool


class _PathVerdict(TypedDict):
    path: PathSpec
    verdict: str
    checks: list[UpdateCheck]
    diagnosis: UpdateDiagnosis | None
    mechanism: str | None
    update_seconds: float | None
    in_flight: list[InFlightRequest]
    staleness: Staleness | None


class PathVerdict(_PathVerdict, total=False):
    """One path judged; `name` (via/pause/cache) is added when the study collects the paths."""
    name: str


class WeightUpdateResult(TypedDict):
    """weight_update.json: the paths judged, with the verdict, the exit code and the headline; `vllm_version`
    the release the update ran on (a diagnosis can depend on it: token_lost_at_resume is vLLM's up to 0.21)."""
    verdict: str
    exit_code: int
    headline: str
    vllm_version: str | None
    reference: str
    tolerance: float
    switch_at: int
    max_tokens: int
    engine_start_seconds: float | None
    seconds: float
    paths: list[PathVerdict]
