"""The table of checks, each with its default bound and where that bound
comes from, and the values that hold a policy's thresholds (`Rules` per
config, `Policy` for a run). How a policy is read and layered is
`core/policy`; how one check is judged is `core/checks`."""
from __future__ import annotations

from dataclasses import dataclass, field

from gate.core.channel import Tolerance
from gate.core.semantics import CENTRE_FLOOR, SPREAD_RATIO

__all__ = ["CheckSpec", "CHECKS", "ENGINE_CHECK", "TOLERANCE_CHECKS", "FAIL_ON", "UNAPPLIED", "MIN_EVIDENCE",
           "Rules", "Policy", "DEFAULT_POLICY"]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    channel: str        # "forced" | "sampler" | "free_run"
    measure: str        # key in the channel summary
    op: str             # "<=" or ">="
    default: float | None  # None: reported, not gated, unless a policy sets a bound
    source: str


# Defaults: a real vLLM bump (0.20 -> 0.26, bf16 model, H100) moved
# teacher-forced scores by at most 1.9e-6; on the same model every config
# change moved the max by 0.75..0.98 and the mean by 0.018..0.043 (H200)
# (docs/design.md section 4.3, runs G1 and G2). 1e-4 sits ~50x above the bump
# and ~7500x below the smallest of those changes; through the gate itself a
# bump moved 4.8e-7 and the smallest knob change 0.0078 (section 4.4, run G3).
# On CPU float32 with a replayed batch plan, an unchanged engine is bitwise
# equal (0).
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("forced.logprobs_close", "teacher-forced logprobs", "forced", "max_abs_diff", "<=", None,
              "per-token rule |d| <= atol + rtol*|a|; atol 1e-4 from measured bump (1.9e-6) vs knob drift (>=0.75)"),
    CheckSpec("forced.k3_kl", "teacher-forced k3 KL", "forced", "k3_kl", "<=", 1e-6,
              "k3 of a 1e-4 uniform shift is 5e-9; NeMo-RL's 1e-3 is for train-vs-inference, far looser"),
    CheckSpec("forced.top1_agreement", "teacher-forced top-1 agreement", "forced", "top1_agreement", ">=", 0.999,
              "greedy choice must not move; 0.1% slack for genuine near-ties"),
    CheckSpec("sampler.logprobs_close", "sampled-token logprobs", "sampler", "max_abs_diff", "<=", None,
              "same per-token rule on the decode path; catches raw vs processed logprobs (docs/design.md section 1)"),
    CheckSpec("sampler.k3_kl", "sampled-token k3 KL", "sampler", "k3_kl", "<=", 1e-6,
              "as teacher-forced k3, on the logprobs an RL trainer actually consumes"),
    CheckSpec("sampler.mult_prob_error", "sampled-token mult-prob error", "sampler", "mult_prob_error", "<=", None,
              "NeMo-RL gates train vs generation at 1.05; reported only by default"),
    CheckSpec("free_run.exact_match_rate", "free-run exact match", "free_run", "exact_match_rate", ">=", None,
              "depends on batch composition (docs/design.md section 4.3); reported, not gated, by default"),
    CheckSpec("sampler.semantics", "in-run sampler semantics", "semantics", "relation_shift", "<=", CENTRE_FLOOR,
              "each run's sampler logprobs fitted on its own prefill scores of the same tokens; raw vs processed "
              "moves the slope by 1/T - 1 (0.43 at T=0.7) and the mean residual by KL(q||p) > 0; the shift beyond "
              "6 standard errors plus a share of the golden's own residual rms (CPU float32: 0) must stay under "
              "this floor; top-k 20 at T=1 under processed logprobs moves the mean by 2.6e-4"),
    CheckSpec("sampler.spread", "in-run decode-vs-prefill spread", "semantics", "spread_ratio", "<=", SPREAD_RATIO,
              "rms and p99 of (sampler - own prefill) over the golden's (floor 1e-4); a real bf16 bump moved the "
              "rms by ~10%, processed logprobs by 5-30x; symmetric decode-path noise keeps slope 1 and mean 0 "
              "and shows only here"),
)
# Not a per-config check: an engine arg the run asked for, resolved by vLLM to something else.
ENGINE_CHECK = CheckSpec("engine.requested_applied", "requested engine args applied", "engine", "unapplied_args",
                         "<=", 0, "a CI user who asked for a knob wants to know that it was not applied; "
                         "policy unapplied_engine_args: warn turns it into a warning")
UNAPPLIED = ("fail", "warn")
MIN_EVIDENCE = 0.5  # a check must compare at least this share of the reference's tokens in its channel
TOLERANCE_CHECKS = {"forced.logprobs_close", "sampler.logprobs_close"}
FAIL_ON = ("regression", "never")


@dataclass(frozen=True)
class Rules:
    """Thresholds for one config (or the default)."""

    atol: float = 1e-4
    rtol: float = 0.0
    bounds: dict[str, float | None] = field(default_factory=lambda: {c.id: c.default for c in CHECKS})
    min_evidence: float = MIN_EVIDENCE

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.atol, self.rtol)


@dataclass(frozen=True)
class Policy:
    default: Rules = field(default_factory=Rules)
    per_config: dict[str, Rules] = field(default_factory=dict)
    fail_on: str = "regression"
    unapplied_engine_args: str = "fail"

    def rules(self, config: str | None) -> Rules:
        return self.per_config.get(config, self.default) if config else self.default

    def tolerances(self) -> dict[str | None, Tolerance]:
        tol: dict[str | None, Tolerance] = {None: self.default.tolerance}
        tol.update({name: r.tolerance for name, r in self.per_config.items()})
        return tol


DEFAULT_POLICY = Policy()
