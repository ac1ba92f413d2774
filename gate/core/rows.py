"""The rows a comparison and its checks hand on, the verdict that holds them,
and the sampling params of a config, typed: TypedDicts, so they stay the
plain dicts that go into verdict.json and the trace header as they are (the
models in `core/models` are the reader's side of the same rows: WorstToken,
PromptRow, Evidence, EnvRow, ConfigOutcome, Check, Verdict)."""
from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["Location", "MaxLocation", "CheckWorst", "WorstToken", "PromptRow", "Divergence", "PositionBucket",
           "Decade", "Histogram", "MatchedSample", "Evidence", "FreeRunSummary", "EnvRow", "ConfigOutcome",
           "UnappliedArg", "SamplingParams", "CheckRow", "Side", "Measures", "PromptLists", "Verdict", "BatchCall"]


class Location(TypedDict):
    """One record: a sampling config's prompt and sample."""
    config: str
    prompt_id: str
    sample: int


class MaxLocation(Location):
    """Where a channel's greatest |d| is (a summary's `max_location`)."""
    position: int
    token_id: int
    reference: float
    candidate: float


class CheckWorst(MaxLocation, total=False):
    """A check's `worst`: the max location with its token's text, when the worst tokens hold it."""
    token: str | None


class WorstToken(TypedDict):
    """One of the worst tokens, with a few tokens of context."""
    channel: str
    config: str
    prompt_id: str
    sample: int
    position: int
    token_id: int
    token: str | None
    context_before: list[str]
    context_after: list[str]
    reference: float
    candidate: float
    abs_diff: float


class PromptRow(Location):
    """One compared record's largest drift per channel and where its free runs part."""
    forced_max_abs_diff: float | None
    sampler_max_abs_diff: float | None
    free_run_match: bool | None
    first_divergence: int | None


class Divergence(Location):
    """Where one pair of free runs parted."""
    position: int
    near_tie: bool
    top2_gap: float | None
    stream_changed: bool


class PositionBucket(TypedDict):
    """|d| over the completion positions [start, end)."""
    start: int
    end: int
    count: int
    mean_abs_diff: float
    max_abs_diff: float


class Decade(TypedDict):
    exp: int
    count: int


class Histogram(TypedDict):
    """|d| by decade for display; `zero` counts the exact matches."""
    zero: int
    decades: list[Decade]


class MatchedSample(TypedDict):
    """Sampler differences on matched tokens: how many, and an even sample of (position, d)."""
    tokens: int
    points: list[list[float]]


class Evidence(TypedDict, total=False):
    """What a check's verdict rests on: compared, offered by the reference, the floor a pass needs, in `unit`."""
    compared: int
    reference: int
    floor: int
    unit: str


class FreeRunSummary(TypedDict):
    """The free runs of a config (or overall): how many matched, where the first parted, the first few partings."""
    sequences: int
    exact_matches: int
    exact_match_rate: float
    first_divergence_min: int | None
    near_tie_divergences: int
    diverged_at_start: int
    stream_changed: int
    stream_first_position: int | None
    diverged: list[Divergence]


class _EnvRow(TypedDict):
    key: str
    group: str
    reference: Any
    candidate: Any
    differs: bool


class EnvRow(_EnvRow, total=False):
    """One environment or engine key of the two runs; `recorded_by` where only one side records it."""
    recorded_by: str


class ConfigOutcome(TypedDict):
    """A sampling config's status, why in words, and its checks counted by status."""
    status: str
    reason: str
    notes: list[str]
    checks: dict[str, int]


class UnappliedArg(TypedDict):
    """An engine arg the run asked for that vLLM resolved to something else."""
    key: str
    requested: Any
    resolved: Any


class SamplingParams(TypedDict, total=False):
    """One sampling config's params (run/sampling.SAMPLING_DEFAULTS fills them in for a suite; a golden from
    another version may lack some)."""
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    n: int
    logprobs: int
    min_tokens: int
    ignore_eos: bool


class CheckRow(TypedDict):
    """One check as verdict.json holds it (core/checks.CheckResult as a dict, or a weight-update path's check)."""
    id: str
    title: str
    channel: str
    config: str | None
    status: str
    measure: str
    value: float | str | None
    op: str
    bound: float
    n_bad: int
    n_total: int
    worst: CheckWorst | None
    message: str
    evidence: Evidence
    note: str | None


class Side(TypedDict):
    """The reference or the candidate: its label, its folder, its trace's manifest as JSON."""
    label: str
    dir: str
    manifest: dict[str, Any]  # the trace header's manifest, with its free-form sections (environment, model, suite)


class Excluded(TypedDict):
    """Pairs a channel did not fold into its moments, by why."""
    null: int
    one_sided_inf: int
    both_neg_inf: int
    moments_over: int


class Tolerances(TypedDict):
    atol: float
    rtol: float


class ChannelSummary(TypedDict):
    """One channel's measures (core/channel_report): None where nothing was there to measure, never NaN."""
    tokens: int
    reference_tokens: int
    candidate_records: int
    mismatched: int
    excluded: Excluded
    bitwise_equal_fraction: float | None
    max_abs_diff: float | None
    max_location: MaxLocation | None
    mean_abs_diff: float | None
    p99_abs_diff: float | None
    p99_bin: list[float] | None
    mult_prob_error: float | None
    k1_kl: float | None
    k2: float | None
    k3_kl: float | None
    chi2: float | None
    clip_fraction: float | None
    prob_diff_max: float | None
    log_ppl_diff_max: float | None
    log_ppl_diff_mean: float | None
    top1_agreement: float | None
    top1_disagreements: int
    topk_overlap: float | None
    prompt_tokens: int
    prompt_max_abs_diff: float | None
    path_reference: str | None
    path_candidate: str | None
    tolerance: Tolerances


class _GroupSummary(TypedDict):
    forced: ChannelSummary | None
    sampler: ChannelSummary | None
    free_run: FreeRunSummary | None


class GroupSummary(_GroupSummary, total=False):
    """Everything measured for one sampling config or overall (core/compare); `semantics` (the in-run
    relation of each side, judged) per config only."""
    semantics: dict[str, Any] | None


class Measures(TypedDict):
    """Each channel's summary, overall and per config."""
    overall: GroupSummary
    per_config: dict[str, GroupSummary]


class PromptLists(TypedDict):
    """Prompts of the suite the golden lacks, and of the golden the suite no longer has."""
    new: list[str]
    unused: list[str]


class _Verdict(TypedDict):
    schema: str
    version: int
    verdict: str
    exit_code: int
    mode: str
    headline: str
    reference: Side
    candidate: Side
    environment_diff: list[EnvRow]
    warnings: list[str]
    checks: list[CheckRow]
    measures: Measures
    worst_tokens: list[WorstToken]
    by_position: dict[str, list[PositionBucket]]
    histogram: dict[str, Histogram]
    per_prompt: list[PromptRow]
    prompts: PromptLists
    diagnosis: dict[str, Any] | None  # docs/diagnosis.md: findings whose keys depend on the ablation
    reproduce: str
    files: dict[str, str]


class Verdict(_Verdict, total=False):
    """verdict.json (docs/verdict.md). `fail_on`, `configs`, `evidence_notes` and `sampler_matched` are written
    by every build but optional to a reader (older verdicts lack them); `rl` and `weight_update` only where
    those ran (the RL measures, the suite's update paths)."""
    fail_on: str
    configs: dict[str, ConfigOutcome]
    evidence_notes: list[str]
    sampler_matched: dict[str, MatchedSample]
    rl: dict[str, Any] | None  # the RL view (core/rl_metrics): its paths and tables depend on the view
    weight_update: dict[str, Any]  # a summary of weight_update.json, or the synchronous path's update info


class BatchCall(TypedDict):
    """One call of a batch plan (the trace header's `batch_plan.calls`): a free-run or scoring call of one
    sampling config, its requests as [config, prompt id, sample] in order."""
    kind: str
    config: str
    requests: list[list[Any]]
