from __future__ import annotations

import socket

import pytest

from gate.github_api import ACTIONS_BOT, ApiError, GitHubAPI, MaybeApplied, PermissionDenied, RetryPolicy
from tests.fake_github import FakeGitHub

TOKEN = "ghs_unit-token-0123456789"
SHA = "a" * 40


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _api(gh: FakeGitHub, session, sleeps=None, **policy) -> GitHubAPI:
    return GitHubAPI(session, gh.url, TOKEN, retry=RetryPolicy(**policy),
                     sleep=sleeps if sleeps is not None else Sleeps(), clock=lambda: 1_000_000.0)


def test_github_api__sends_auth_version_and_json(gh, session):
    _api(gh, session).create_status("o/r", SHA, state="success", context="pg", description="d",
                                    target_url="https://x/run")
    (req,) = gh.requests
    assert (req.method, req.path) == ("POST", f"/repos/o/r/statuses/{SHA}")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == "2022-11-28"
    assert req.body == {"state": "success", "context": "pg", "description": "d", "target_url": "https://x/run"}


def test_github_api__paginates_by_link_header_until_the_end(gh, session):
    gh.max_per_page = 30
    gh.add_comments("o/r", 5, [f"c{i}" for i in range(95)])
    bodies = [c["body"] for c in _api(gh, session).issue_comments("o/r", 5)]
    assert bodies == [f"c{i}" for i in range(95)]
    pages = [r.query.get("page", "1") for r in gh.requests_to("GET", "/comments")]
    assert pages == ["1", "2", "3", "4"]
    assert gh.requests[0].query["per_page"] == "100"


def test_github_api__retries_502_twice_then_succeeds_with_backoff(gh, session):
    gh.fail("POST", "/statuses/", 502, times=2)
    sleeps = Sleeps()
    _api(gh, session, sleeps).create_status("o/r", SHA, state="success", context="c", description="d",
                                            target_url=None)
    assert [r.status for r in gh.requests] == [502, 502, 201]
    assert sleeps == [1.0, 2.0]
    assert len(gh.statuses) == 1


def test_github_api__gives_up_after_attempts_on_5xx(gh, session):
    gh.fail("GET", "/pulls/", 503, times=-1)
    with pytest.raises(ApiError, match="HTTP 503") as err:
        _api(gh, session, attempts=3).pull("o/r", 1)
    assert err.value.status == 503 and len(gh.requests) == 3


def test_github_api__429_waits_retry_after(gh, session):
    gh.fail("POST", "/check-runs", 429, headers={"Retry-After": "7"})
    sleeps = Sleeps()
    _api(gh, session, sleeps).create_check_run("o/r", {"name": "x"})
    assert sleeps == [7.0] and len(gh.check_runs) == 1


def test_github_api__403_with_retry_after_is_a_rate_limit(gh, session):
    gh.fail("POST", "/statuses/", 403, headers={"Retry-After": "3"},
            body={"message": "You have exceeded a secondary rate limit"})
    sleeps = Sleeps()
    _api(gh, session, sleeps).create_status("o/r", SHA, state="pending", context="c", description="d",
                                            target_url=None)
    assert sleeps == [3.0]


def test_github_api__403_remaining_zero_waits_until_reset(gh, session):
    gh.fail("GET", "/pulls/", 403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000030"},
            body={"message": "API rate limit exceeded"})
    gh.add_pull("o/r", 3, SHA)
    sleeps = Sleeps()
    assert _api(gh, session, sleeps).pull("o/r", 3)["head"]["sha"] == SHA
    assert sleeps == [31.0]


def test_github_api__rate_limit_without_headers_backs_off_at_least_60s(gh, session):
    gh.fail("GET", "/pulls/", 429, times=2)
    gh.add_pull("o/r", 3, SHA)
    sleeps = Sleeps()
    _api(gh, session, sleeps).pull("o/r", 3)
    assert sleeps == [60.0, 120.0]


def test_github_api__rate_limit_reset_too_far_gives_up_without_sleeping(gh, session):
    gh.fail("GET", "/pulls/", 403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1090000"})
    sleeps = Sleeps()
    with pytest.raises(ApiError, match="rate limited"):
        _api(gh, session, sleeps).pull("o/r", 3)
    assert sleeps == []


def test_github_api__403_forbidden_is_permission_denied_without_retry(gh, session):
    gh.read_only = True
    with pytest.raises(PermissionDenied, match="Resource not accessible by integration") as err:
        _api(gh, session).create_comment("o/r", 1, "hi")
    assert err.value.status == 403 and len(gh.requests) == 1


def test_github_api__401_is_permission_denied(gh, session):
    api = GitHubAPI(session, gh.url, "wrong-token", sleep=Sleeps())
    with pytest.raises(PermissionDenied, match="Bad credentials"):
        api.pull("o/r", 1)


def test_github_api__422_is_not_retried(gh, session):
    with pytest.raises(ApiError, match="HTTP 422"):
        _api(gh, session).create_status("o/r", SHA, state="success", context="c", description="x" * 141,
                                        target_url=None)
    assert len(gh.requests) == 1


def test_github_api__slow_response_times_out_and_is_retried(gh, session):
    gh.add_pull("o/r", 3, SHA)
    gh.fail("GET", "/pulls/", 0, delay_s=1.0)  # slow once, then normal
    sleeps = Sleeps()
    assert _api(gh, session, sleeps, timeout_s=0.2).pull("o/r", 3)["number"] == 3
    assert sleeps == [1.0]


def test_github_api__connection_refused_retries_then_fails(session):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    sleeps = Sleeps()
    api = GitHubAPI(session, f"http://127.0.0.1:{port}", TOKEN, retry=RetryPolicy(attempts=3), sleep=sleeps)
    with pytest.raises(ApiError, match="ConnectionError after 3 tries") as err:
        api.pull("o/r", 1)
    assert sleeps == [1.0, 2.0] and TOKEN not in str(err.value)


def test_github_api__enterprise_prefix(session):
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as gh:
        gh.max_per_page = 2
        gh.add_comments("o/r", 1, ["a", "b", "c"])
        assert [c["body"] for c in _api(gh, session).issue_comments("o/r", 1)] == ["a", "b", "c"]
        assert all(r.path.startswith("/api/v3/repos/o/r/") for r in gh.requests)


def test_github_api__token_not_sent_to_other_hosts(gh, session):
    with FakeGitHub(token=None) as other:
        other.add_pull("o/r", 1, SHA)
        _api(gh, session).request("GET", f"{other.url}/repos/o/r/pulls/1")
    (req,) = other.requests
    assert "authorization" not in req.headers


def test_github_api__repr_has_no_token(gh, session):
    assert TOKEN not in repr(_api(gh, session))


# ------------------------------------------------------------------ who the token is
def test_github_api__installation_token_writes_as_github_actions_bot(gh, session):
    api = _api(gh, session)
    assert api.token_login() == ACTIONS_BOT == gh.author["login"]
    assert api.token_login() == ACTIONS_BOT
    assert [r.status for r in gh.requests_to("GET", "^/user$")] == [403]  # asked once


def test_github_api__personal_token_writes_as_its_user(session):
    with FakeGitHub(token=TOKEN, login="octocat") as gh:
        assert _api(gh, session).token_login() == "octocat"


def test_github_api__bad_credentials_are_not_taken_for_an_installation_token(gh, session):
    api = GitHubAPI(session, gh.url, "wrong-token", sleep=Sleeps())
    with pytest.raises(PermissionDenied, match="Bad credentials"):
        api.token_login()


# ------------------------------------------------------------------ creating exactly once
def _create_comment_once(api: GitHubAPI, body: str = "hi") -> dict:
    def lookup():
        return next((c for c in api.issue_comments("o/r", 1) if c["body"] == body), None)
    return api.create_once("create the comment", lambda: api.create_comment("o/r", 1, body), lookup)


def test_github_api__create_once_502_502_then_created_once(gh, session):
    gh.fail("POST", "/issues/1/comments", 502, times=2)
    sleeps = Sleeps()
    made = _create_comment_once(_api(gh, session, sleeps))
    assert [(r.method, r.status) for r in gh.requests] == [
        ("POST", 502), ("GET", 200), ("POST", 502), ("GET", 200), ("POST", 201)]
    assert sleeps == [1.0, 2.0] and made["body"] == "hi" and len(gh.comments[("o/r", 1)]) == 1


def test_github_api__create_once_finds_what_a_lost_answer_created(gh, session):
    gh.fail("POST", "/issues/1/comments", 502, times=2, after=True)  # created, answer lost
    made = _create_comment_once(_api(gh, session))
    assert len(gh.requests_to("POST", "/comments")) == 1 and len(gh.comments[("o/r", 1)]) == 1
    assert made["id"] == gh.comments[("o/r", 1)][0]["id"]


def test_github_api__create_once_gives_up_after_attempts(gh, session):
    gh.fail("POST", "/issues/1/comments", 502, times=-1)
    sleeps = Sleeps()
    with pytest.raises(MaybeApplied, match="HTTP 502"):
        _create_comment_once(_api(gh, session, sleeps, attempts=3))
    assert len(gh.requests_to("POST", "/comments")) == 3 and sleeps == [1.0, 2.0]
    assert ("o/r", 1) not in gh.comments


def test_github_api__create_once_tries_at_least_3_times(gh, session):
    gh.fail("POST", "/issues/1/comments", 503, times=2)
    _create_comment_once(_api(gh, session, attempts=1))
    assert len(gh.comments[("o/r", 1)]) == 1
