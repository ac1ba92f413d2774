"""`parity-gate publish` end to end against the fake GitHub server."""
from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest

from gate.core.errors import BadInput, InfraError
from gate.github import outcome, publish, publisher
from gate.github.context import ResultOrigin
from gate.github.outcome import comment_marker
from gate.github.publish import Runtime
from gate.github.retry import RetryPolicy
from gate.report import render as report
from tests.fake_github import ACTIONS_BOT, FakeGitHub

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOKEN = "ghs_publish-token-XYZ987"
HEAD, MERGE = "a" * 40, "c" * 40


@pytest.fixture
def result(tmp_path) -> Path:
    dst = tmp_path / "result"
    shutil.copytree(FIXTURES / "results" / "fail", dst)
    return dst


@pytest.fixture
def passed(tmp_path) -> Path:
    dst = tmp_path / "passed"
    shutil.copytree(FIXTURES / "results" / "pass", dst)
    return dst


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _env(gh: FakeGitHub, tmp_path: Path, event: str = "pull_request", payload: str | None = None) -> dict[str, str]:
    return {"GITHUB_REPOSITORY": "octo/gate", "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(FIXTURES / "events" / f"{payload or event}.json"),
            "GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": "https://github.example", "GITHUB_RUN_ID": "4242",
            "GITHUB_SHA": MERGE, "GITHUB_TOKEN": TOKEN,
            "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}


def _publish(argv: list[str], env: dict[str, str], session, sleeps=None) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    publish.add_arguments(parser, "publish")
    out = io.StringIO()
    rt = Runtime(env=env, session=session, stdout=out, sleep=sleeps if sleeps is not None else Sleeps(),
                 clock=lambda: 1_000_000.0, retry=RetryPolicy())
    code = publish.publish_command(parser.parse_args(argv), rt)
    return code, out.getvalue()


def _outputs(tmp_path: Path) -> dict[str, str]:
    from tests.unit.test_workflow_commands import parse_outputs
    return parse_outputs((tmp_path / "output").read_text())


def test_publish__fail_posts_status_comment_check_run_outputs(gh, session, result, tmp_path):
    code, out = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1
    (status,) = gh.statuses
    assert status["sha"] == HEAD  # the PR head, never the merge commit
    assert status["state"] == "failure" and status["context"] == "parity-gate"
    assert len(status["description"]) <= 140 and status["description"].startswith("FAIL: 2 of 3")
    assert status["target_url"] == "https://github.example/octo/gate/actions/runs/4242"
    (comment,) = gh.comments[("octo/gate", 7)]
    assert comment_marker("parity-gate") in comment["body"]
    (check,) = gh.check_runs
    assert (check["name"], check["head_sha"], check["conclusion"]) == ("parity-gate report", HEAD, "failure")
    assert check["output"]["summary"] and len(check["output"]["summary"]) <= 65535
    outputs = _outputs(tmp_path)
    assert outputs["verdict"] == "fail" and outputs["exit-code"] == "1"
    assert outputs["result-dir"] == str(result) and outputs["report-path"] == str(result / "report.html")
    assert outputs["verdict-path"] == str(result / "verdict.json")
    assert (tmp_path / "summary").read_text().strip()
    lines = out.splitlines()
    assert sum(line.startswith("::error title=parity-gate%3A sampled-token") for line in lines) == 2
    assert any(line.startswith("::warning") and "different devices" in line for line in lines)
    assert not any(line.startswith("::set-output") for line in lines)  # hostile token text stays escaped


def test_publish__sticky_comment_found_on_page_4(gh, session, result, tmp_path):
    gh.max_per_page = 30
    marker = comment_marker("parity-gate")
    bodies = [f"comment {i}" for i in range(120)]
    bodies[100] = f"{marker}\nold parity-gate report"
    ids = gh.add_comments("octo/gate", 7, bodies, login="github-actions[bot]")
    _publish([str(result)], _env(gh, tmp_path), session)
    assert [r.query.get("page", "1") for r in gh.requests_to("GET", "/comments")] == ["1", "2", "3", "4"]
    (patch,) = gh.requests_to("PATCH", "/issues/comments/")
    assert patch.path.endswith(f"/{ids[100]}")
    assert gh.requests_to("POST", "/comments") == []
    comments = gh.comments[("octo/gate", 7)]
    assert len(comments) == 120 and "FAIL" in comments[100]["body"]


def test_publish__second_run_updates_instead_of_duplicating(gh, session, result, passed, tmp_path):
    env = _env(gh, tmp_path)
    _publish([str(result)], env, session)
    _publish([str(passed)], env, session)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "PASS" in comment["body"]
    assert [s["state"] for s in gh.statuses] == ["failure", "success"]


def test_publish__one_comment_per_status_context(gh, session, result, tmp_path):
    env = _env(gh, tmp_path)
    _publish([str(result), "--status-context", "parity-gate / cuda"], env, session)
    _publish([str(result), "--status-context", "parity-gate / cpu"], env, session)
    _publish([str(result), "--status-context", "parity-gate / cuda"], env, session)
    comments = gh.comments[("octo/gate", 7)]
    assert len(comments) == 2
    assert comment_marker("parity-gate / cuda") in comments[0]["body"]
    assert comment_marker("parity-gate / cpu") in comments[1]["body"]
    assert {s["context"] for s in gh.statuses} == {"parity-gate / cuda", "parity-gate / cpu"}


def test_publish__on_fail_creates_nothing_on_a_clean_pass(gh, session, passed, tmp_path):
    code, _ = _publish([str(passed), "--comment", "on-fail"], _env(gh, tmp_path), session)
    assert code == 0 and ("octo/gate", 7) not in gh.comments
    assert [s["state"] for s in gh.statuses] == ["success"]


def test_publish__on_fail_still_updates_an_existing_comment_once_passing(gh, session, result, passed, tmp_path):
    env = _env(gh, tmp_path)
    _publish([str(result), "--comment", "on-fail"], env, session)
    _publish([str(passed), "--comment", "on-fail"], env, session)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "PASS" in comment["body"] and "FAIL" not in comment["body"].split("\n", 2)[1]


def test_publish__never_posts_no_comment(gh, session, result, tmp_path):
    _publish([str(result), "--comment", "never", "--no-check-run"], _env(gh, tmp_path), session)
    assert gh.requests_to("GET", "/comments") == [] and gh.comments == {} and gh.check_runs == []
    assert len(gh.statuses) == 1


def test_publish__fail_on_never_exits_0_with_success_status(gh, session, result, tmp_path):
    code, _ = _publish([str(result), "--fail-on", "never"], _env(gh, tmp_path), session)
    assert code == 0 and gh.statuses[0]["state"] == "success"


def test_publish__502_twice_then_success(gh, session, result, tmp_path):
    gh.fail("POST", "/statuses/", 502, times=2)
    sleeps = Sleeps()
    code, out = _publish([str(result)], _env(gh, tmp_path), session, sleeps)
    assert code == 1 and len(gh.statuses) == 1 and sleeps == [1.0, 2.0]
    assert "::warning" not in out.replace("::warning title=parity-gate::golden and run used different", "")


def test_publish__comment_created_but_response_lost_is_not_duplicated(gh, session, result, tmp_path):
    # GitHub stores the comment, then the 502 reaches us: a blind retry would post it twice
    gh.fail("POST", "/issues/7/comments", 502, after=True)
    code, _ = _publish([str(result)], _env(gh, tmp_path), session, Sleeps())
    assert code == 1
    assert len(gh.comments[("octo/gate", 7)]) == 1
    assert len(gh.requests_to("POST", "/issues/7/comments")) == 1


def test_publish__comment_create_502_before_acting_is_created_once(gh, session, result, tmp_path):
    gh.fail("POST", "/issues/7/comments", 502)
    code, _ = _publish([str(result)], _env(gh, tmp_path), session, Sleeps())
    assert code == 1 and len(gh.comments[("octo/gate", 7)]) == 1
    assert len(gh.requests_to("POST", "/issues/7/comments")) == 2


def test_publish__429_with_retry_after(gh, session, result, tmp_path):
    gh.fail("GET", "/comments", 429, headers={"Retry-After": "5"})
    sleeps = Sleeps()
    _publish([str(result)], _env(gh, tmp_path), session, sleeps)
    assert sleeps == [5.0] and len(gh.comments[("octo/gate", 7)]) == 1


def test_publish__fork_403_warns_once_report_kept_then_exit_3_standalone(session, result, tmp_path):
    before = {p.name: p.read_bytes() for p in result.iterdir()}
    with FakeGitHub(token=TOKEN, read_only=True) as gh:
        with pytest.raises(InfraError, match="could post nothing"):
            _publish([str(result)], _env(gh, tmp_path), session)
    assert {p.name: p.read_bytes() for p in result.iterdir()} == before
    assert _outputs(tmp_path)["verdict"] == "fail"  # outputs and summary are still written


def test_publish__check_run_403_is_skipped_quietly(gh, session, result, tmp_path):
    gh.fail("POST", "/check-runs", 403, times=-1, body={"message": "Resource not accessible by personal access token"})
    code, out = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1 and len(gh.statuses) == 1 and gh.check_runs == []
    assert "two-workflow" not in out


def test_publish__error_exit_code_without_verdict_posts_error(gh, session, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _publish([str(empty), "--exit-code", "3", "--reason", "engine died"], _env(gh, tmp_path), session)
    assert code == 3
    (status,) = gh.statuses
    assert status["state"] == "error" and "engine died" in status["description"]
    assert "::error title=parity-gate::ERROR" in out and _outputs(tmp_path)["verdict"] == "error"


def test_publish__missing_verdict_is_bad_input_and_an_error_status(gh, session, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="verdict.json"):
        _publish([str(tmp_path / "empty")], _env(gh, tmp_path), session)
    (status,) = gh.statuses  # a required check must not hang pending on a result with no verdict
    assert status["state"] == "error" and "invalid" in status["description"]
    assert str(tmp_path) not in status["description"]


def test_publish__push_posts_status_but_no_comment(gh, session, passed, tmp_path):
    code, _ = _publish([str(passed)], _env(gh, tmp_path, "push"), session)
    assert code == 0 and gh.statuses[0]["sha"] == HEAD and gh.comments == {}


def test_publish__workflow_run_fork_takes_pr_from_verified_artifact(gh, session, result, tmp_path):
    (result / "github.json").write_text(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1").to_json())
    gh.add_pull("octo/gate", 7, HEAD)
    code, _ = _publish([str(result)], _env(gh, tmp_path, "workflow_run", "workflow_run_fork"), session)
    assert code == 1 and len(gh.comments[("octo/gate", 7)]) == 1 and gh.statuses[0]["sha"] == HEAD


def test_publish__workflow_run_rejects_artifact_of_another_commit(gh, session, result, tmp_path):
    (result / "github.json").write_text(ResultOrigin("octo/gate", 7, "d" * 40, "pull_request", "1").to_json())
    with pytest.raises(BadInput, match="does not match workflow_run.head_sha"):
        _publish([str(result)], _env(gh, tmp_path, "workflow_run", "workflow_run_fork"), session)
    assert gh.requests == []


def test_publish__workflow_run_rejects_pr_whose_head_moved(gh, session, result, tmp_path):
    (result / "github.json").write_text(ResultOrigin("octo/gate", 9, HEAD, "pull_request", "1").to_json())
    gh.add_pull("octo/gate", 9, "e" * 40)
    with pytest.raises(BadInput, match="PR #9 has head"):
        _publish([str(result)], _env(gh, tmp_path, "workflow_run", "workflow_run_fork"), session)
    assert gh.statuses == [] and gh.comments == {}


def test_publish__enterprise_server_base_url(session, result, tmp_path):
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as gh:
        _publish([str(result)], _env(gh, tmp_path), session)
        # GraphQL (who the token is) lives beside /api/v3 on GitHub Enterprise Server
        assert gh.statuses and gh.comments
        assert all(r.path.startswith("/api/v3/") or r.path == "/api/graphql" for r in gh.requests)


def test_publish__long_comment_is_cut_to_the_limit(gh, session, result, tmp_path):
    verdict = json.loads((result / "verdict.json").read_text())
    verdict["headline"] = "FAIL: " + "x" * 70000
    (result / "verdict.json").write_text(json.dumps(verdict))
    _publish([str(result)], _env(gh, tmp_path), session)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert len(comment["body"]) <= 65536
    assert len(gh.statuses[0]["description"]) == 140


# ------------------------------------------------------------------ the sticky comment is ours alone
def test_publish__marker_comment_by_another_user_is_never_patched(gh, session, result, tmp_path):
    marker = comment_marker("parity-gate")
    (theirs,) = gh.add_comments("octo/gate", 7, [f"{marker}\nPASS, trust me"], login="mallory")
    (ours,) = gh.add_comments("octo/gate", 7, [f"{marker}\nold report"], login=ACTIONS_BOT)
    _publish([str(result)], _env(gh, tmp_path), session)
    (patch,) = gh.requests_to("PATCH", "/issues/comments/")
    assert patch.path.endswith(f"/{ours}")
    comments = {c["id"]: c for c in gh.comments[("octo/gate", 7)]}
    assert comments[theirs]["body"] == f"{marker}\nPASS, trust me" and "FAIL" in comments[ours]["body"]
    assert gh.requests_to("POST", "/comments") == []


def test_publish__only_a_foreign_marker_comment_means_a_new_one(gh, session, result, tmp_path):
    marker = comment_marker("parity-gate")
    gh.add_comments("octo/gate", 7, [f"{marker}\nhijack"], login="mallory")
    _publish([str(result)], _env(gh, tmp_path), session)
    _publish([str(result)], _env(gh, tmp_path), session)
    assert gh.requests_to("PATCH", "/issues/comments/") == []
    theirs, ours = gh.comments[("octo/gate", 7)]
    assert theirs["body"].endswith("hijack") and ours["user"]["login"] == ACTIONS_BOT
    assert len(gh.requests_to("POST", "/comments")) == 1


def test_publish__personal_token_finds_its_user_comment_not_the_bots(session, result, tmp_path):
    marker = comment_marker("parity-gate")
    with FakeGitHub(token=TOKEN, login="octocat") as gh:
        bot, mine = gh.add_comments("octo/gate", 7, [f"{marker}\nbot"], login=ACTIONS_BOT) + \
            gh.add_comments("octo/gate", 7, [f"{marker}\nmine"], login="octocat")
        _publish([str(result)], _env(gh, tmp_path), session)
        (patch,) = gh.requests_to("PATCH", "/issues/comments/")
        assert patch.path.endswith(f"/{mine}")
        assert len(gh.requests_to("GET", "^/user$")) == 1


def test_publish__comment_author_names_a_github_apps_bot(gh, session, result, tmp_path):
    marker = comment_marker("parity-gate")
    gh.add_comments("octo/gate", 7, [f"{marker}\nactions"], login=ACTIONS_BOT)
    (app,) = gh.add_comments("octo/gate", 7, [f"{marker}\napp"], login="parity-app[bot]")
    _publish([str(result), "--comment-author", "parity-app[bot]"], _env(gh, tmp_path), session)
    (patch,) = gh.requests_to("PATCH", "/issues/comments/")
    assert patch.path.endswith(f"/{app}") and gh.requests_to("GET", "^/user$") == []


def test_publish__comment_post_502_502_then_success_posts_once(gh, session, result, tmp_path):
    gh.fail("POST", "/issues/7/comments", 502, times=2)
    sleeps = Sleeps()
    code, out = _publish([str(result)], _env(gh, tmp_path), session, sleeps)
    assert code == 1 and len(gh.comments[("octo/gate", 7)]) == 1
    assert [r.status for r in gh.requests_to("POST", "/issues/7/comments")] == [502, 502, 201]
    assert sleeps == [1.0, 2.0] and "could not write" not in out


def test_publish__comment_post_failing_every_time_warns_and_posts_nothing_twice(gh, session, result, tmp_path):
    gh.fail("POST", "/issues/7/comments", 502, times=-1)
    code, out = _publish([str(result)], _env(gh, tmp_path), session, Sleeps())
    assert code == 1 and ("octo/gate", 7) not in gh.comments
    assert len(gh.requests_to("POST", "/issues/7/comments")) == RetryPolicy().attempts
    assert "could not write the pull request comment" in out and gh.statuses[0]["state"] == "failure"


# ------------------------------------------------------------------ forged results
FORGED = "FORGED-MARKDOWN [click](https://evil.example) @octo/team"


def _forge(result: Path, **changes) -> None:
    verdict = json.loads((result / "verdict.json").read_text())
    verdict.update(changes)
    (result / "verdict.json").write_text(json.dumps(verdict))


def _assert_no_forged_markdown(gh: FakeGitHub, tmp_path: Path) -> None:
    for comment in gh.comments.get(("octo/gate", 7), []):
        assert "FORGED" not in comment["body"]
    for check in gh.check_runs:
        assert "FORGED" not in check["output"]["summary"]
    assert "FORGED" not in (tmp_path / "summary").read_text()


@pytest.mark.parametrize("forgery", [
    {"warnings": {}},
    {"checks": [{"id": "x", "status": "pass"}]},   # a check missing its fields
    {"verdict": "pass", "exit_code": 0, "headline": "PASS", "checks": "all good"},
])
def test_publish__forged_verdict_is_an_error_status_never_fork_markdown(gh, session, result, tmp_path, forgery):
    (result / "comment.md").write_text(FORGED)
    (result / "summary.md").write_text(FORGED)
    _forge(result, **forgery)
    with pytest.raises(BadInput, match="verdict.json"):
        _publish([str(result)], _env(gh, tmp_path), session)
    (status,) = gh.statuses
    assert status["state"] == "error" and status["description"].startswith("ERROR (bad input): the result is invalid")
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "the result is invalid" in comment["body"]
    _assert_no_forged_markdown(gh, tmp_path)
    assert _outputs(tmp_path)["verdict"] == "error"


def test_publish__valid_verdict_is_rendered_here_never_taken_from_the_folder(gh, session, result, tmp_path):
    (result / "comment.md").write_text(FORGED)
    (result / "summary.md").write_text(FORGED)
    _publish([str(result)], _env(gh, tmp_path), session)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "FAIL" in comment["body"]
    _assert_no_forged_markdown(gh, tmp_path)


def test_publish__rendering_failure_posts_the_escaped_fallback(gh, session, result, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("a template bug")

    monkeypatch.setattr(report, "render_comment", broken)
    monkeypatch.setattr(report, "render_summary", broken)
    (result / "comment.md").write_text(FORGED)
    (result / "summary.md").write_text(FORGED)
    _forge(result, headline="FAIL: <img src=x onerror=alert(1)> [x](https://evil.example) @octo/team")
    code, _ = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1 and gh.statuses[0]["state"] == "failure"
    (comment,) = gh.comments[("octo/gate", 7)]
    body = comment["body"]
    assert comment_marker("parity-gate") in body and "could not be rendered" in body
    assert "<img" not in body and "&lt;img" in body and "\\[x\\]" in body and "@octo" not in body
    _assert_no_forged_markdown(gh, tmp_path)


# ------------------------------------------------------------------ workflow_run links the gate run
def test_publish__workflow_run_links_the_gate_run(gh, session, result, tmp_path):
    (result / "github.json").write_text(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1").to_json())
    gh.add_pull("octo/gate", 7, HEAD)
    _publish([str(result)], _env(gh, tmp_path, "workflow_run", "workflow_run_fork"), session)
    gate_run = "https://github.example/octo/gate/actions/runs/556"  # workflow_run.id, not GITHUB_RUN_ID
    assert gh.statuses[0]["target_url"] == gate_run
    assert gh.check_runs[0]["details_url"] == gate_run
    assert "/runs/4242" not in gh.comments[("octo/gate", 7)][0]["body"]


def test_publish__inconclusive_verdict_is_a_failure_status_never_a_green_check(gh, session, passed, tmp_path):
    """Not enough evidence must not turn a required check green, whatever
    --fail-on regression makes of the exit code."""
    import json

    vpath = passed / "verdict.json"
    v = json.loads(vpath.read_text())
    v.update(verdict="inconclusive", exit_code=1,
             headline="INCONCLUSIVE: not enough evidence to pass 1 of 1 configs ('hot': no check had enough evidence)")
    vpath.write_text(json.dumps(v))
    code, _ = _publish([str(passed), "--fail-on", "regression"], _env(gh, tmp_path), session)
    assert code == 1
    assert [s["state"] for s in gh.statuses] == ["failure"]
    assert _outputs(tmp_path)["verdict"] == "inconclusive"
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "INCONCLUSIVE" in comment["body"]


# ------------------------------------------------------------------ the footer never pushes a comment past the limit
@pytest.mark.parametrize("footer", ["", "Computed for " + "a" * 40 + "."])
def test_publish__with_footer_never_exceeds_the_limit(footer):
    limit = 300
    for n in range(limit - 120, limit + 40):
        for body in ("x" * n, "x" * (n - 1) + "\n", "x" * (n - 2) + "\n\n"):
            out = outcome._with_footer(body, footer, limit, "https://github.example/run/1")
            assert len(out) <= limit, (n, repr(body[-3:]))
            if footer:
                assert out.endswith(f"\n\n{footer}\n")


def test_publish__a_comment_at_the_limit_is_accepted_by_github(gh, session, result, tmp_path, monkeypatch):
    # A body that, with its footer, lands exactly one character past the limit before the cut.
    footer = outcome.provenance(publish.context_from_env(_env(gh, tmp_path)), "parity-gate")
    tail = f"\n\n{footer}\n"
    body = comment_marker("parity-gate") + "\n" + "y" * (65536 - len(tail) - len(comment_marker("parity-gate")))
    monkeypatch.setattr(report, "render_comment", lambda *a, **k: body)
    code, out = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1 and "could not write" not in out
    (comment,) = gh.comments[("octo/gate", 7)]
    assert len(comment["body"]) <= 65536 and comment["body"].endswith(tail)


# ------------------------------------------------------------------ a realistic GitHub's refusals
def test_publish__unknown_pull_request_warns_and_the_status_still_posts(gh, session, result, tmp_path):
    code, out = _publish([str(result), "--pr", "4242"], _env(gh, tmp_path), session)
    assert code == 1 and [s["state"] for s in gh.statuses] == ["failure"]
    assert "could not write the pull request comment" in out and "HTTP 404" in out
    assert gh.comments == {}


def test_publish__token_without_checks_write_skips_the_check_run_quietly(gh, session, result, tmp_path):
    gh.grant({"statuses", "pull_requests", "issues"})
    code, out = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1 and gh.check_runs == [] and len(gh.statuses) == 1 and gh.comments
    assert [r.status for r in gh.requests_to("POST", "/check-runs")] == [403]
    assert "two-workflow" not in out and "::warning title=parity-gate::could not" not in out


def test_publish__broken_answers_end_in_the_final_status_not_a_crash(gh, session, result, tmp_path):
    gh.fail("POST", "/statuses/", 200, cut=True)                    # ChunkedEncodingError, then fine
    gh.fail("GET", "/comments", 200, raw=b"<html>busy</html>", times=-1)  # never JSON
    code, out = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1 and [s["state"] for s in gh.statuses] == ["failure"]
    assert "could not write the pull request comment" in out and "not JSON" in out


def test_publish__secondary_rate_limit_on_the_status_is_waited_out(gh, session, result, tmp_path):
    gh.secondary_rate_limit("POST", "/statuses/", retry_after="2")
    sleeps = Sleeps()
    code, _ = _publish([str(result)], _env(gh, tmp_path), session, sleeps)
    assert code == 1 and sleeps == [2.0] and [s["state"] for s in gh.statuses] == ["failure"]


# ------------------------------------------------------------------ idempotent check runs and comments
def test_publish__check_run_created_but_answer_lost_is_not_duplicated(gh, session, result, tmp_path):
    gh.fail("POST", "/check-runs", drop=True, after=True)  # GitHub made it; the connection closed unanswered
    code, _ = _publish([str(result)], _env(gh, tmp_path), session)
    assert code == 1
    (check,) = gh.check_runs
    assert check["external_id"] == publisher.check_run_external_id("parity-gate")
    assert len(gh.requests_to("POST", "/check-runs")) == 1


def test_publish__check_run_502_after_acting_is_found_not_made_again(gh, session, result, tmp_path):
    gh.fail("POST", "/check-runs", 502, after=True)
    _publish([str(result)], _env(gh, tmp_path), session)
    assert len(gh.check_runs) == 1 and len(gh.requests_to("POST", "/check-runs")) == 1


def test_publish__second_run_on_the_same_commit_updates_its_check_run(gh, session, result, passed, tmp_path):
    env = _env(gh, tmp_path)
    _publish([str(result)], env, session)
    _publish([str(passed)], env, session)
    (check,) = gh.check_runs
    assert check["conclusion"] == "success" and len(gh.requests_to("PATCH", "/check-runs/")) == 1
    _publish([str(result), "--status-context", "parity-gate / cpu"], env, session)
    assert sorted(c["name"] for c in gh.check_runs) == ["parity-gate / cpu report", "parity-gate report"]


def test_publish__a_check_run_of_another_context_or_id_is_never_updated(gh, session, result, tmp_path):
    gh.check_runs.append({"id": 1, "name": "parity-gate report", "head_sha": HEAD, "status": "completed",
                          "conclusion": "success", "external_id": "someone-else"})
    _publish([str(result)], _env(gh, tmp_path), session)
    assert gh.requests_to("PATCH", "/check-runs/") == [] and len(gh.check_runs) == 2
    assert gh.check_runs[0]["conclusion"] == "success"


def test_publish__github_app_token_updates_its_own_comment_without_comment_author(session, result, passed, tmp_path):
    marker = comment_marker("parity-gate")
    with FakeGitHub(token=TOKEN, app_slug="parity-app") as gh:
        gh.add_comments("octo/gate", 7, [f"{marker}\nactions"], login=ACTIONS_BOT)  # another identity's
        env = _env(gh, tmp_path)
        _publish([str(result)], env, session)
        _publish([str(passed)], env, session)
        _publish([str(result)], env, session)
        comments = gh.comments[("octo/gate", 7)]
        assert [c["user"]["login"] for c in comments] == [ACTIONS_BOT, "parity-app[bot]"]
        assert comments[0]["body"].endswith("actions") and "FAIL" in comments[1]["body"]
        assert len(gh.requests_to("POST", "/comments")) == 1 and len(gh.requests_to("PATCH", "/comments/")) == 2
        assert len(gh.requests_to("POST", "^/graphql$")) == 3  # asked once a run


# ------------------------------------------------------------------ forks fail closed, end to end
def _deleted_fork_run(tmp_path: Path, pull_requests: list) -> str:
    payload = json.loads((FIXTURES / "events" / "workflow_run.json").read_text())
    payload["workflow_run"]["head_repository"] = None  # what GitHub sends once the fork is deleted
    payload["workflow_run"]["pull_requests"] = pull_requests
    path = tmp_path / "deleted-fork.json"
    path.write_text(json.dumps(payload))
    return str(path)


@pytest.mark.parametrize("pull_requests", [[], [{"number": 7}]])
def test_publish__workflow_run_with_null_head_repository_never_posts_the_required_context(
        gh, session, passed, tmp_path, pull_requests):
    (passed / "github.json").write_text(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1").to_json())
    gh.add_pull("octo/gate", 7, HEAD)
    env = _env(gh, tmp_path, "workflow_run")
    env["GITHUB_EVENT_PATH"] = _deleted_fork_run(tmp_path, pull_requests)
    code, out = _publish([str(passed)], env, session)
    assert code == 0
    unverified = "parity-gate (fork, unverified)"
    assert [(s["state"], s["context"]) for s in gh.statuses] == [("success", unverified)]
    assert [c["name"] for c in gh.check_runs] == [f"{unverified} report"]
    (comment,) = gh.comments[("octo/gate", 7)]
    assert comment_marker(unverified) in comment["body"] and comment_marker("parity-gate") not in comment["body"]
    assert "**Unverified**" in comment["body"] and "fork, unverified" in out


# ------------------------------------------------------------------ SIGTERM mid-publish, a real process
def _publish_process(gh: FakeGitHub, tmp_path: Path, result: Path):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    env.update(_env(gh, tmp_path))
    env["PYTHONPATH"] = str(FIXTURES.parent.parent)
    return subprocess.Popen([sys.executable, "-m", "gate", "publish", str(result)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until(pred, timeout: float = 30.0) -> None:
    import time
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_publish__sigterm_while_posting_the_status_leaves_an_error_not_pending(gh, result, tmp_path):
    import signal
    gh.fail("POST", "/statuses/", 429, headers={"Retry-After": "120"})  # the publisher waits 2 minutes
    proc = _publish_process(gh, tmp_path, result)
    _wait_until(lambda: gh.requests_to("POST", "/statuses/"))
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "cancelled by SIGTERM while publishing" in stderr
    (status,) = gh.statuses
    assert status["state"] == "error" and status["context"] == "parity-gate" and status["sha"] == HEAD
    assert status["description"].startswith("ERROR (infrastructure failure): cancelled (SIGTERM) while publishing")


def test_publish__sigterm_after_the_final_status_keeps_it(gh, result, tmp_path):
    import signal
    gh.fail("GET", "/comments", 429, headers={"Retry-After": "120"})  # status up; now waiting on the comment
    proc = _publish_process(gh, tmp_path, result)
    _wait_until(lambda: gh.requests_to("GET", "/comments"))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert [s["state"] for s in gh.statuses] == ["failure"]
