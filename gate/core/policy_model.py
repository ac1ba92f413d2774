"""The policy's shape as a pydantic model (docs/policy.md): a policy file or
a suite's `policy:` section. gate/schemas/policy.schema.json is generated from
it; gate/core/policy.py validates with it before layering a policy. Apart
from gate/core/models.py because it reads the check table of
gate/core/thresholds.py (and so numpy), which the trace and verdict models need not."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, Field

from gate.core.models import _Closed, _not_nan

__all__ = ["PolicyFile", "PolicyRules", "CheckBounds"]

NonNegative = Annotated[float, Field(ge=0), AfterValidator(_not_nan)]


def _check_bounds() -> type[BaseModel]:
    """`checks:` of a policy: one optional key per check id (gate/core/thresholds.py
    CHECKS); a tolerance check takes no bound of its own (atol/rtol give it),
    only null, which stops gating on it."""
    from pydantic import create_model

    from gate.core.thresholds import CHECKS, TOLERANCE_CHECKS
    fields: dict[str, Any] = {}
    for c in CHECKS:
        kind = Optional[NonNegative] if c.id not in TOLERANCE_CHECKS else None
        fields[c.id.replace(".", "__")] = (kind, Field(None, alias=c.id, description=f"{c.title}: {c.measure} "
                                                                                     f"{c.op} bound"))
    return create_model("CheckBounds", __base__=_Closed, **fields)


CheckBounds = _check_bounds()


class PolicyRules(_Closed):
    """The thresholds of one policy layer (the default or one sampling config)."""
    atol: NonNegative = Field(None, description="absolute tolerance per token: |d| <= atol + rtol*|a|")
    rtol: NonNegative = Field(None, description="relative tolerance per token")
    min_evidence: Annotated[float, Field(gt=0, le=1)] = Field(
        None, description="the share of the reference's tokens a check must compare")
    checks: CheckBounds = Field(None, description="check id -> bound (null: reported, not gated)")


class PolicyFile(PolicyRules):
    """A policy file, or a suite's `policy:` section (docs/policy.md)."""
    per_config: Optional[dict[str, PolicyRules]] = Field(None, description="sampling config name -> its rules")
    fail_on: Literal["regression", "never"] = None  # type: ignore[assignment]
    unapplied_engine_args: Literal["fail", "warn"] = None  # type: ignore[assignment]
