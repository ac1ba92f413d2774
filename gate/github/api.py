"""A small GitHub REST client on a `requests.Session` the caller passes in.

Retries 5xx, connection errors and broken answers (a chunked body cut short,
a 2xx body that is not JSON) with exponential backoff, waits out rate limits
(429/403 with `retry-after`, else `x-ratelimit-reset` when
`x-ratelimit-remaining` is 0, else at least 60 s) within a budget for the
whole process, follows `Link` pagination on the API host only, and works
against GitHub Enterprise Server (any API base URL). A call that must not run
twice (creating a comment or a check run) is never retried blindly: see
`create_once`. Whatever goes wrong ends in a typed `ApiError`, never in a
`requests` or JSON exception. The token goes only into the Authorization
header of requests to that base URL; it is never logged and never part of an
error message."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests

from gate.core.errors import InfraError
from gate.github.retry import RetryPolicy, rate_limit_wait

__all__ = ["GitHubAPI", "ApiError", "PermissionDenied", "MaybeApplied", "ACTIONS_BOT"]

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
# The author of everything GITHUB_TOKEN writes.
ACTIONS_BOT = "github-actions[bot]"
# GET /user's answer to an installation token (GITHUB_TOKEN, a GitHub App's).
_INTEGRATION_DENIED = "Resource not accessible by integration"
# A list longer than this many pages is a loop or an attack, not a PR's comments.
MAX_PAGES = 1000

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


def _message(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text[:200].split())
    msg = data.get("message", "") if isinstance(data, dict) else ""
    return str(msg)[:200]


class _NotJson(Exception):
    pass


def _json(resp: requests.Response) -> Any:
    if resp.status_code == 204 or not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:  # JSONDecodeError, and a body that is not UTF-8
        raise _NotJson(resp.headers.get("content-type") or "no content type") from None


# Transport failures worth another try: the answer never came, or came broken.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
              requests.exceptions.ContentDecodingError)


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
        self._rate_waited = 0.0

    def __repr__(self) -> str:  # no token
        return f"GitHubAPI(base_url={self._base!r})"

    def with_retry(self, retry: RetryPolicy) -> "GitHubAPI":
        """The same client (session, token, identity) with another policy."""
        other = GitHubAPI(self._session, self._base, self._token, retry=retry, sleep=self._sleep,
                          clock=self._clock, user_agent=self._user_agent)
        other._login = self._login
        return other

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self._base}/{path_or_url.lstrip('/')}"

    def _on_api_host(self, url: str) -> bool:
        base, target = urlsplit(self._base), urlsplit(url)
        return (base.scheme, base.netloc) == (target.scheme, target.netloc)

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": self._user_agent}
        # Only our own API host gets the token, whatever a Link header says.
        if self._token and self._on_api_host(url):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _rate_limit_budget_left(self) -> float:
        return max(0.0, self._retry.rate_limit_budget_s - self._rate_waited)

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, replay_safe: bool = True) -> requests.Response:
        """The response, its body read. `replay_safe=False` for a call that
        must not run twice (creating a comment): a 5xx or a lost connection
        may have come after GitHub acted, so it is raised as `MaybeApplied`
        instead of retried blindly."""
        return self._send(method, path, json=json, params=params, replay_safe=replay_safe)[0]

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
             replay_safe: bool = True) -> Any:
        """`request`, and its JSON body (None for an empty one). A 2xx answer
        that is not JSON (a proxy's HTML page) counts as a broken answer."""
        return self._send(method, path, json=json, params=params, replay_safe=replay_safe, parse=True)[1]

    def _send(self, method: str, path: str, *, json: Any, params: dict[str, Any] | None, replay_safe: bool,
              parse: bool = False) -> tuple[requests.Response, Any]:
        url = self._url(path)
        shown = urlsplit(url).path
        policy = self._retry
        for n in range(policy.attempts):
            last = n == policy.attempts - 1
            try:
                resp = self._session.request(method, url, json=json, params=params,
                                             headers=self._headers(url), timeout=policy.timeout_s)
                data = _json(resp) if parse and resp.status_code < 400 else None
            except (*_TRANSIENT, _NotJson) as exc:
                why = (f"HTTP {resp.status_code} with a body that is not JSON ({exc})" if isinstance(exc, _NotJson)
                       else type(exc).__name__)
                if not replay_safe:
                    raise MaybeApplied(f"GitHub {method} {shown}: {why}") from None
                if last:
                    raise ApiError(f"GitHub {method} {shown}: {why} after {policy.attempts} tries") from None
                wait = self.retry_wait_s(n)
                log.info("GitHub %s %s: %s, retry in %.0f s", method, shown, why, wait)
                self._sleep(wait)
                continue
            except requests.RequestException as exc:  # a bad URL, too many redirects: retrying won't help
                raise ApiError(f"GitHub {method} {shown}: {type(exc).__name__}") from None
            status = resp.status_code
            if status < 400:
                log.info("GitHub %s %s: %d", method, shown, status)
                return resp, data
            wait = rate_limit_wait(resp, self._clock(), policy, n)
            if wait is not None:
                left = self._rate_limit_budget_left()
                if wait > left or last:
                    raise ApiError(f"GitHub {method} {shown}: rate limited (HTTP {status}), would need to wait "
                                   f"{wait:.0f} s, {left:.0f} s left of the {policy.rate_limit_budget_s:.0f} s "
                                   "budget for rate-limit waits", status)
                log.warning("GitHub %s %s: rate limited (HTTP %d), waiting %.0f s", method, shown, status, wait)
                self._rate_waited += wait
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
            msg = _message(resp)
            raise ApiError(f"GitHub {method} {shown}: HTTP {status}: {msg}", status, message=msg)
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

    def _graphql_url(self) -> str:
        # GitHub Enterprise Server serves GraphQL at /api/graphql, beside /api/v3.
        if self._base.endswith("/api/v3"):
            return self._base[: -len("/v3")] + "/graphql"
        return self._base + "/graphql"

    def token_login(self) -> str:
        """Who the token writes as, asked of GitHub: the login GET /user
        names (a personal access token). An installation token (GITHUB_TOKEN,
        a GitHub App's) gets 403 "Resource not accessible by integration"
        there, and GET /app takes only the App's own JWT; GraphQL's `viewer`
        names it (`github-actions[bot]`, `<app-slug>[bot]`). Where even that
        fails, github-actions[bot]."""
        if self._login is None:
            try:
                data = self.call("GET", "user")
                login = data.get("login") if isinstance(data, dict) else None
            except PermissionDenied as exc:
                if exc.status != 403 or _INTEGRATION_DENIED not in exc.message:
                    raise
                login = self._viewer_login()
            if not isinstance(login, str) or not login:
                raise ApiError("GitHub GET /user: no login in the answer")
            self._login = login
        return self._login

    def _viewer_login(self) -> str:
        try:
            data = self.call("POST", self._graphql_url(), json={"query": "query { viewer { login } }"})
        except ApiError as exc:
            log.info("GraphQL viewer: %s; taking the token for GITHUB_TOKEN (%s)", exc.what, ACTIONS_BOT)
            return ACTIONS_BOT
        login = ((data or {}).get("data") or {}).get("viewer", {}).get("login") if isinstance(data, dict) else None
        if not isinstance(login, str) or not login:
            log.info("GraphQL viewer named no login; taking the token for GITHUB_TOKEN (%s)", ACTIONS_BOT)
            return ACTIONS_BOT
        return login

    def paginate(self, path: str, params: dict[str, Any] | None = None, key: str | None = None) -> Iterator[Any]:
        """Every item of a list endpoint (or of the list under `key` in an
        object answer), following `Link: rel="next"`: only to the API host,
        never to a page already read, at most MAX_PAGES pages."""
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        seen: set[str] = set()
        shown = urlsplit(self._url(path)).path
        while url:
            full = self._url(url)
            if not self._on_api_host(full) or not urlsplit(full).path.startswith(urlsplit(self._base).path):
                raise ApiError(f"GitHub GET {shown}: the Link header's next page is off the API host "
                               f"({urlsplit(full).netloc or full[:80]}); not followed")
            if full in seen or len(seen) >= MAX_PAGES:
                raise ApiError(f"GitHub GET {shown}: the Link header's next page "
                               f"{'was already read (a loop)' if full in seen else f'is past {MAX_PAGES} pages'}; "
                               "not followed")
            seen.add(full)
            resp, data = self._send("GET", full, json=None, params=query, replay_safe=True, parse=True)
            items = data.get(key) if key is not None and isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ApiError(f"GitHub GET {shown}: expected a list")
            yield from items
            url = resp.links.get("next", {}).get("url")
            query = None  # the next URL carries its own query

    # --- the endpoints the gate uses ---------------------------------------
    def issue_comments(self, repo: str, number: int) -> Iterator[dict[str, Any]]:
        return self.paginate(f"repos/{repo}/issues/{number}/comments")

    def create_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        return self.call("POST", f"repos/{repo}/issues/{number}/comments", json={"body": body}, replay_safe=False)

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        return self.call("PATCH", f"repos/{repo}/issues/comments/{comment_id}", json={"body": body})

    def create_status(self, repo: str, sha: str, *, state: str, context: str, description: str,
                      target_url: str | None) -> dict[str, Any]:
        payload = {"state": state, "context": context, "description": description}
        if target_url:
            payload["target_url"] = target_url
        return self.call("POST", f"repos/{repo}/statuses/{sha}", json=payload)

    def create_check_run(self, repo: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Not replayed blindly (a lost answer may have created it): see
        `create_once` and `check_runs`."""
        return self.call("POST", f"repos/{repo}/check-runs", json=payload, replay_safe=False)

    def update_check_run(self, repo: str, check_run_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", f"repos/{repo}/check-runs/{check_run_id}", json=payload)

    def check_runs(self, repo: str, sha: str, name: str) -> Iterator[dict[str, Any]]:
        """The check runs named `name` on commit `sha` (every one, not only the latest)."""
        return self.paginate(f"repos/{repo}/commits/{sha}/check-runs", {"check_name": name, "filter": "all"},
                             key="check_runs")

    def pull(self, repo: str, number: int) -> dict[str, Any]:
        return self.call("GET", f"repos/{repo}/pulls/{number}")

    # --- PR-comment commands (gate/github/pr_commands.py) --------------------
    def collaborator_role(self, repo: str, login: str) -> str:
        """`login`'s role on `repo`, asked of GitHub: admin, maintain, write,
        triage, read or none (`role_name`; the legacy `permission` where an
        older GitHub Enterprise Server sends only that)."""
        data = self.call("GET", f"repos/{repo}/collaborators/{login}/permission")
        role = (data or {}).get("role_name") or (data or {}).get("permission") if isinstance(data, dict) else None
        if not isinstance(role, str) or not role:
            raise ApiError(f"GitHub GET /repos/{repo}/collaborators/{login}/permission: no role in the answer")
        return role

    def add_reaction(self, repo: str, comment_id: int, content: str) -> dict[str, Any]:
        """GitHub answers the same reaction twice with the first one: safe to repeat."""
        return self.call("POST", f"repos/{repo}/issues/comments/{comment_id}/reactions", json={"content": content})

    def combined_status(self, repo: str, sha: str) -> dict[str, Any]:
        return self.call("GET", f"repos/{repo}/commits/{sha}/status", params={"per_page": 100})

    def run_artifacts(self, repo: str, run_id: int, name: str | None = None) -> Iterator[dict[str, Any]]:
        return self.paginate(f"repos/{repo}/actions/runs/{run_id}/artifacts", {"name": name} if name else None,
                             key="artifacts")

    def download_artifact(self, repo: str, artifact_id: int, limit: int) -> bytes:
        """The artifact's zip. GitHub answers with a redirect to a blob URL on
        another host; `requests` drops the Authorization header when it
        follows one off the API host. Refused beyond `limit` bytes."""
        resp = self.request("GET", f"repos/{repo}/actions/artifacts/{artifact_id}/zip")
        if len(resp.content) > limit:
            raise ApiError(f"GitHub artifact {artifact_id}: {len(resp.content)} bytes, over the {limit} byte limit")
        return resp.content

    def file_sha(self, repo: str, path: str, ref: str) -> str | None:
        """The blob sha of `path` on branch `ref`, or None when there is none."""
        try:
            data = self.call("GET", f"repos/{repo}/contents/{path}", params={"ref": ref})
        except PermissionDenied:
            raise
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        sha = data.get("sha") if isinstance(data, dict) else None
        if not isinstance(sha, str) or (isinstance(data, dict) and data.get("type") not in (None, "file")):
            raise ApiError(f"GitHub GET /repos/{repo}/contents/{path}: not a file")
        return sha

    def put_file(self, repo: str, path: str, content_b64: str, *, message: str, branch: str,
                 sha: str | None) -> dict[str, Any]:
        """One commit on `branch` that writes `path`. `sha` is the blob it
        replaces (None: a new file); GitHub answers 409 when the branch holds
        another. Not replayed blindly: a lost answer may have committed."""
        payload: dict[str, Any] = {"message": message, "content": content_b64, "branch": branch}
        if sha is not None:
            payload["sha"] = sha
        return self.call("PUT", f"repos/{repo}/contents/{path}", json=payload, replay_safe=False)
