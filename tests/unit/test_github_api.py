from __future__ import annotations

import socket

import pytest

from gate.github.api import ACTIONS_BOT, ApiError, GitHubAPI, MaybeApplied, PermissionDenied
from gate.github.retry import RetryPolicy
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
    _api(gh, session, sleeps).create_check_run("o/r", {"name": "x", "head_sha": SHA})
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


# ------------------------------------------------------------------ what GitHub refuses, the fake refuses
def test_github_api__comment_over_65536_characters_is_422(gh, session):
    api = _api(gh, session)
    assert api.create_comment("o/r", 1, "x" * 65536)["body"] == "x" * 65536
    with pytest.raises(ApiError, match="HTTP 422: Validation Failed") as err:
        api.create_comment("o/r", 1, "x" * 65537)
    assert err.value.status == 422 and len(gh.comments[("o/r", 1)]) == 1


def test_github_api__unknown_issue_pull_or_repository_is_404(gh, session):
    api = _api(gh, session)
    for call in (lambda: api.create_comment("o/r", 123456, "hi"), lambda: list(api.issue_comments("o/r", 123456)),
                 lambda: api.pull("o/r", 5), lambda: api.create_comment("nobody/nothing", 1, "hi")):
        with pytest.raises(ApiError, match="HTTP 404") as err:
            call()
        assert err.value.status == 404 and not isinstance(err.value, PermissionDenied)
    assert gh.comments == {}


@pytest.mark.parametrize("state, sha, message", [
    ("passed", SHA, "Validation Failed"),
    ("success", "1234567" * 5 + "89abc", "No commit found for SHA"),
])
def test_github_api__status_with_a_bad_state_or_an_unknown_sha_is_422(gh, session, state, sha, message):
    with pytest.raises(ApiError, match=f"HTTP 422: {message}"):
        _api(gh, session).create_status("o/r", sha, state=state, context="c", description="d", target_url=None)
    assert gh.statuses == [] and len(gh.requests) == 1  # never retried


def test_github_api__check_run_without_checks_write_is_403(gh, session):
    gh.grant({"statuses", "pull_requests", "issues"})
    with pytest.raises(PermissionDenied, match="Resource not accessible by integration") as err:
        _api(gh, session).create_check_run("o/r", {"name": "x", "head_sha": SHA})
    assert err.value.status == 403 and gh.check_runs == []


def test_github_api__a_personal_token_never_creates_check_runs(session):
    with FakeGitHub(token=TOKEN, login="octocat") as gh:
        with pytest.raises(PermissionDenied, match="personal access token"):
            _api(gh, session).create_check_run("o/r", {"name": "x", "head_sha": SHA})


def test_github_api__per_token_permissions(gh, session):
    gh.add_token("read-statuses-only", permissions={"statuses"})
    api = GitHubAPI(session, gh.url, "read-statuses-only", sleep=Sleeps())
    api.create_status("o/r", SHA, state="success", context="c", description="d", target_url=None)
    with pytest.raises(PermissionDenied):
        api.create_comment("o/r", 1, "hi")
    _api(gh, session).create_comment("o/r", 1, "hi")  # the main token still may


def test_github_api__secondary_rate_limit_is_waited_out(gh, session):
    gh.secondary_rate_limit("POST", "/issues/1/comments", retry_after="4")
    sleeps = Sleeps()
    _api(gh, session, sleeps).update_comment("o/r", _api(gh, session).create_comment("o/r", 1, "a")["id"], "b")
    assert sleeps == [] and len(gh.comments[("o/r", 1)]) == 1
    gh.secondary_rate_limit("GET", "/issues/1/comments", retry_after="4")
    assert [c["body"] for c in _api(gh, session, sleeps).issue_comments("o/r", 1)] == ["b"]
    assert sleeps == [4.0]


# ------------------------------------------------------------------ rate limits fit in a job
def test_github_api__headerless_429s_stop_within_the_budget(gh, session):
    gh.fail("GET", "/pulls/", 429, times=-1)
    sleeps = Sleeps()
    with pytest.raises(ApiError, match="rate limited .* 120 s left of the 300 s budget"):
        _api(gh, session, sleeps).pull("o/r", 3)
    assert sleeps == [60.0, 120.0] and sum(sleeps) <= RetryPolicy().rate_limit_budget_s


def test_github_api__the_rate_limit_budget_is_shared_by_every_call(gh, session):
    gh.add_pull("o/r", 3, SHA)
    gh.fail("GET", "/pulls/", 429, headers={"Retry-After": "200"})
    sleeps = Sleeps()
    api = _api(gh, session, sleeps)
    api.pull("o/r", 3)
    gh.fail("GET", "/pulls/", 429, headers={"Retry-After": "200"})
    with pytest.raises(ApiError, match="would need to wait 200 s, 100 s left"):
        api.pull("o/r", 3)
    assert sleeps == [200.0]


# ------------------------------------------------------------------ broken answers are typed errors
def test_github_api__chunked_body_cut_short_is_retried(gh, session):
    gh.add_pull("o/r", 3, SHA)
    gh.fail("GET", "/pulls/", 200, cut=True)
    sleeps = Sleeps()
    assert _api(gh, session, sleeps).pull("o/r", 3)["number"] == 3
    assert sleeps == [1.0]


def test_github_api__chunked_body_cut_short_every_time_is_an_api_error(gh, session):
    gh.fail("GET", "/pulls/", 200, cut=True, times=-1)
    with pytest.raises(ApiError, match="ChunkedEncodingError after 3 tries"):
        _api(gh, session, attempts=3).pull("o/r", 3)


def test_github_api__a_body_that_is_not_json_is_retried_then_an_api_error(gh, session):
    gh.add_pull("o/r", 3, SHA)
    gh.fail("GET", "/pulls/", 200, raw=b"<html>proxy says hi</html>")
    assert _api(gh, session).pull("o/r", 3)["number"] == 3
    gh.fail("GET", "/pulls/", 200, raw=b"<html>proxy says hi</html>", times=-1)
    with pytest.raises(ApiError, match=r"HTTP 200 with a body that is not JSON \(text/html"):
        _api(gh, session, attempts=2).pull("o/r", 3)


def test_github_api__non_json_answer_to_a_create_may_have_created_it(gh, session):
    gh.fail("POST", "/issues/1/comments", 201, raw=b"<html>", after=True, times=2)
    with pytest.raises(MaybeApplied, match="not JSON"):
        _api(gh, session).create_comment("o/r", 1, "hi")
    made = _create_comment_once(_api(gh, session), "hello")  # made, its answer broken: found, not made again
    assert [c["body"] for c in gh.comments[("o/r", 1)]] == ["hi", "hello"] and made["body"] == "hello"


def test_github_api__non_json_error_body_names_the_status(gh, session):
    gh.fail("GET", "/pulls/", 404, raw=b"<html><h1>Not Found</h1></html>")
    with pytest.raises(ApiError, match="HTTP 404: <html><h1>Not Found"):
        _api(gh, session).pull("o/r", 3)


def test_github_api__a_dropped_connection_is_retried(gh, session):
    gh.add_pull("o/r", 3, SHA)
    gh.fail("GET", "/pulls/", drop=True)
    assert _api(gh, session).pull("o/r", 3)["number"] == 3


# ------------------------------------------------------------------ hostile pagination links
def test_github_api__next_link_off_the_api_host_is_not_followed(gh, session):
    gh.add_comments("o/r", 1, ["a"])
    with FakeGitHub(token=None) as other:
        gh.abuse_next_link("/comments", f"{other.url}/repos/o/r/issues/1/comments?page=2")
        with pytest.raises(ApiError, match="off the API host"):
            list(_api(gh, session).issue_comments("o/r", 1))
        assert other.requests == []


def test_github_api__next_link_out_of_the_enterprise_prefix_is_not_followed(session):
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as gh:
        gh.add_comments("o/r", 1, ["a"])
        gh.abuse_next_link("/comments", f"{gh.host}/elsewhere/comments?page=2")
        with pytest.raises(ApiError, match="off the API host"):
            list(_api(gh, session).issue_comments("o/r", 1))
        assert len(gh.requests) == 1


def test_github_api__a_looping_next_link_stops(gh, session):
    gh.add_comments("o/r", 1, ["a", "b"])
    gh.abuse_next_link("/comments")  # every page names itself as the next
    with pytest.raises(ApiError, match="already read"):
        list(_api(gh, session).issue_comments("o/r", 1))
    assert len(gh.requests) == 2


# ------------------------------------------------------------------ who an App's token is
def test_github_api__github_apps_token_is_named_by_graphql_viewer(session):
    with FakeGitHub(token=TOKEN, app_slug="parity-app") as gh:
        api = _api(gh, session)
        assert api.token_login() == "parity-app[bot]" == gh.author["login"]
        assert [(r.method, r.path, r.status) for r in gh.requests] == [("GET", "/user", 403),
                                                                       ("POST", "/graphql", 200)]
        assert gh.requests[1].headers["authorization"] == f"Bearer {TOKEN}"


def test_github_api__graphql_on_enterprise_server_is_beside_api_v3(session):
    with FakeGitHub(token=TOKEN, prefix="/api/v3", app_slug="parity-app") as gh:
        assert _api(gh, session).token_login() == "parity-app[bot]"
        assert [r.path for r in gh.requests] == ["/api/v3/user", "/api/graphql"]


def test_github_api__graphql_failing_falls_back_to_github_actions_bot(gh, session):
    gh.fail("POST", "/graphql", 403, times=-1, body={"message": "Resource not accessible by integration"})
    assert _api(gh, session).token_login() == ACTIONS_BOT


# ------------------------------------------------------------------ check runs
def test_github_api__check_runs_listed_by_name_and_updated(gh, session):
    api = _api(gh, session)
    made = api.create_check_run("o/r", {"name": "pg report", "head_sha": SHA, "external_id": "x"})
    api.create_check_run("o/r", {"name": "other", "head_sha": SHA})
    (found,) = api.check_runs("o/r", SHA, "pg report")
    assert found["id"] == made["id"]
    assert gh.requests_to("GET", "/check-runs")[0].query["check_name"] == "pg report"
    api.update_check_run("o/r", made["id"], {"status": "completed", "conclusion": "success"})
    assert gh.check_runs[0]["conclusion"] == "success"
