"""A small GitHub REST client on a `requests.Session` the caller passes in.

Retries 5xx and connection errors with exponential backoff, waits out rate
limits (429/403 with `retry-after`, else `x-ratelimit-reset` when
`x-ratelimit-remaining` is 0, else at least 60 s), follows `Link` pagination,
and works against GitHub Enterprise Server (any API base URL). A call that
must not run twice (creating a comment) is never retried blindly: see
`create_once`. The token goes only into the Authorization header of requests
to that base URL; it is never logged and never part of an error message."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests

from gate.errors import InfraError

__all__ = ["GitHubAPI", "RetryPolicy", "ApiError", "PermissionDenied", "MaybeApplied", "ACTIONS_BOT"]

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
# The author of everything GITHUB_TOKEN writes.
ACTIONS_BOT = "github-actions[bot]"
# GET /user's answer to an installation token (GITHUB_TOKEN, a GitHub App's).
_INTEGRATION_DENIED = "Resource not accessible by integration"

T = TypeVar("T")


class ApiError(InfraError):
    """A GitHub call failed for good (after retries, or a 4xx that retrying can't fix)."""

    def __init__(self, what: str, status: int | None = None, hint: str = "", message: str = "") -> None:
        super().__init__(what, hint)
        self.status = status
        self.message = message  # GitHub's own "message", if it sent one


class PermissionDenied(ApiError):
    """401/403 that is not a rate limit: the token may not do this (fork PR, PAT without scope)."""


class MaybeApplied(ApiError):
    """A non-replayable call failed in a way that GitHub may still have acted on."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6                 # tries per request, rate-limit waits included
    backoff_s: float = 1.0            # 5xx/connection: backoff_s * 2**n
    backoff_max_s: float = 30.0
    rate_limit_min_s: float = 60.0    # a rate limit with no header: wait at least this
    rate_limit_max_s: float = 900.0   # a reset further out than this: give up (the job has a timeout)
    timeout_s: float = 30.0           # connect and read timeout per request


def _rate_limit_wait(resp: requests.Response, now: float, policy: RetryPolicy, n: int) -> float | None:
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


def _message(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    msg = data.get("message", "") if isinstance(data, dict) else ""
    return str(msg)[:200]


class GitHubAPI:
    def __init__(self, session: requests.Session, base_url: str, token: str, *,
                 retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 user_agent: str = "parity-gate") -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._user_agent = user_agent
        self._login: str | None = None

    def __repr__(self) -> str:  # no token
        return f"GitHubAPI(base_url={self._base!r})"

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self._base}/{path_or_url.lstrip('/')}"

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": self._user_agent}
        # Only our own API host gets the token, whatever a Link header says.
        base, target = urlsplit(self._base), urlsplit(url)
        if self._token and (base.scheme, base.netloc) == (target.scheme, target.netloc):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, replay_safe: bool = True) -> requests.Response:
        """`replay_safe=False` for a call that must not run twice (creating a
        comment): a 5xx or a lost connection may have come after GitHub acted,
        so it is raised as `MaybeApplied` instead of retried blindly."""
        url = self._url(path)
        shown = urlsplit(url).path
        policy = self._retry
        for n in range(policy.attempts):
            last = n == policy.attempts - 1
            try:
                resp = self._session.request(method, url, json=json, params=params,
                                             headers=self._headers(url), timeout=policy.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not replay_safe:
                    raise MaybeApplied(f"GitHub {method} {shown}: {type(exc).__name__}") from None
                if last:
                    raise ApiError(f"GitHub {method} {shown}: {type(exc).__name__} after {policy.attempts} tries") from None
                wait = self.retry_wait_s(n)
                log.info("GitHub %s %s: %s, retry in %.0f s", method, shown, type(exc).__name__, wait)
                self._sleep(wait)
                continue
            status = resp.status_code
            if status < 400:
                log.info("GitHub %s %s: %d", method, shown, status)
                return resp
            wait = _rate_limit_wait(resp, self._clock(), policy, n)
            if wait is not None:
                if wait > policy.rate_limit_max_s or last:
                    raise ApiError(f"GitHub {method} {shown}: rate limited (HTTP {status}), "
                                   f"would need to wait {wait:.0f} s", status)
                log.warning("GitHub %s %s: rate limited (HTTP %d), waiting %.0f s", method, shown, status, wait)
                self._sleep(wait)
                continue
            if status in (401, 403):
                msg = _message(resp)
                raise PermissionDenied(f"GitHub {method} {shown}: HTTP {status}: {msg}", status, message=msg)
            if status >= 500 and not replay_safe:
                raise MaybeApplied(f"GitHub {method} {shown}: HTTP {status}", status)
            if status >= 500 and not last:
                wait = self.retry_wait_s(n)
                log.info("GitHub %s %s: HTTP %d, retry in %.0f s", method, shown, status, wait)
                self._sleep(wait)
                continue
            raise ApiError(f"GitHub {method} {shown}: HTTP {status}: {_message(resp)}", status)
        raise AssertionError("unreachable")  # the loop returns or raises

    def retry_wait_s(self, n: int) -> float:
        """The wait before try n+2 of a call that failed n+1 times."""
        return min(self._retry.backoff_max_s, self._retry.backoff_s * 2 ** n)

    def create_once(self, what: str, create: Callable[[], T], lookup: Callable[[], T | None]) -> T:
        """Run a non-replayable `create` (replay_safe=False inside) until it
        succeeds, up to the policy's attempts (at least 3), with backoff. A
        failure GitHub may have acted on (`MaybeApplied`: a 5xx, a lost
        connection) is followed by `lookup`: if that finds what the lost
        call made, it is the answer, so nothing is ever created twice.
        GitHub outages come in runs; one retry is not enough."""
        attempts = max(3, self._retry.attempts)
        for n in range(attempts):
            try:
                return create()
            except MaybeApplied as exc:
                if n == attempts - 1:
                    raise
                wait = self.retry_wait_s(n)
                log.info("%s: %s; looking it up in %.0f s before trying again", what, exc.what, wait)
                self._sleep(wait)
                found = lookup()
                if found is not None:
                    return found
        raise AssertionError("unreachable")  # the loop returns or raises

    def token_login(self) -> str:
        """Who the token writes as: the login GET /user names, or
        github-actions[bot] for GITHUB_TOKEN, an installation token, which
        GET /user refuses with 403 "Resource not accessible by integration".
        (A GitHub App's own installation token gets the same answer but
        writes as <app-slug>[bot]; that case is documented, not detected.)"""
        if self._login is None:
            try:
                login = self.request("GET", "user").json().get("login")
            except PermissionDenied as exc:
                if exc.status != 403 or _INTEGRATION_DENIED not in exc.message:
                    raise
                login = ACTIONS_BOT
            if not isinstance(login, str) or not login:
                raise ApiError("GitHub GET /user: no login in the answer")
            self._login = login
        return self._login

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a list endpoint, following `Link: rel="next"`."""
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        while url:
            resp = self.request("GET", url, params=query)
            items = resp.json()
            if not isinstance(items, list):
                raise ApiError(f"GitHub GET {urlsplit(self._url(url)).path}: expected a list")
            yield from items
            url = resp.links.get("next", {}).get("url")
            query = None  # the next URL carries its own query

    # --- the endpoints the gate uses ---------------------------------------
    def issue_comments(self, repo: str, number: int) -> Iterator[dict[str, Any]]:
        return self.paginate(f"repos/{repo}/issues/{number}/comments")

    def create_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        return self.request("POST", f"repos/{repo}/issues/{number}/comments", json={"body": body},
                            replay_safe=False).json()

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        return self.request("PATCH", f"repos/{repo}/issues/comments/{comment_id}", json={"body": body}).json()

    def create_status(self, repo: str, sha: str, *, state: str, context: str, description: str,
                      target_url: str | None) -> dict[str, Any]:
        payload = {"state": state, "context": context, "description": description}
        if target_url:
            payload["target_url"] = target_url
        return self.request("POST", f"repos/{repo}/statuses/{sha}", json=payload).json()

    def create_check_run(self, repo: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"repos/{repo}/check-runs", json=payload).json()

    def pull(self, repo: str, number: int) -> dict[str, Any]:
        return self.request("GET", f"repos/{repo}/pulls/{number}").json()
