"""When a GitHub call is tried again, and how long to wait first: the
retry policy of a client (tries, backoff, the budget for rate-limit waits)
and the wait a rate-limited answer asks for (`retry-after`, else
`x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else at least
`rate_limit_min_s`, doubling). Reads an answer's status and headers; sends
nothing (`github/api` does)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

__all__ = ["RetryPolicy", "QUICK_RETRY", "rate_limit_wait"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6                 # tries per request, rate-limit waits included
    backoff_s: float = 1.0            # 5xx/connection: backoff_s * 2**n
    backoff_max_s: float = 30.0
    rate_limit_min_s: float = 60.0    # a rate limit with no header: wait at least this, doubling
    # All rate-limit waits of one client (one process) together: a wait that
    # would go past it gives up at once, so a 10-minute job still ends with
    # time left to post its final status.
    rate_limit_budget_s: float = 300.0
    timeout_s: float = 30.0           # connect and read timeout per request


# For a last word on the way out (a cancelled job: the runner kills the
# process a few seconds after SIGTERM): two quick tries, no rate-limit waits.
QUICK_RETRY = RetryPolicy(attempts=2, backoff_s=0.5, backoff_max_s=0.5, rate_limit_budget_s=0.0, timeout_s=5.0)


def rate_limit_wait(resp: requests.Response, now: float, policy: RetryPolicy, n: int) -> float | None:
    """Seconds to wait if `resp` is a rate limit, else None."""
    h = resp.headers
    if resp.status_code not in (403, 429):
        return None
    retry_after = h.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return policy.rate_limit_min_s
    if h.get("x-ratelimit-remaining") == "0" and h.get("x-ratelimit-reset"):
        try:
            return max(1.0, float(h["x-ratelimit-reset"]) - now + 1.0)
        except ValueError:
            return policy.rate_limit_min_s
    if resp.status_code == 429 or "rate limit" in resp.text[:2000].lower():
        return policy.rate_limit_min_s * (2 ** n)
    return None
