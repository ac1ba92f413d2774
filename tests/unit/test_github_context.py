from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate.core.errors import BadInput
from gate.github.context import UNVERIFIED_SUFFIX, ResultOrigin, context_from_env, unverified_context

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "events"
HEAD, MERGE = "a" * 40, "c" * 40


def _env(event: str, payload: str | None = None, **extra: str) -> dict[str, str]:
    env = {"GITHUB_REPOSITORY": "octo/gate", "GITHUB_EVENT_NAME": event, "GITHUB_SHA": MERGE,
           "GITHUB_RUN_ID": "99", "GITHUB_TOKEN": "s3cret-token-value"}
    env["GITHUB_EVENT_PATH"] = str(EVENTS / f"{payload or event}.json")
    env.update(extra)
    return env


def test_github_context__pull_request_uses_head_sha_not_merge_sha():
    ctx = context_from_env(_env("pull_request"))
    assert ctx.head_sha == HEAD and ctx.sha == MERGE
    assert ctx.pr_number == 7 and not ctx.from_fork


def test_github_context__pull_request_target_from_fork():
    ctx = context_from_env(_env("pull_request_target"))
    assert (ctx.pr_number, ctx.head_sha, ctx.from_fork) == (8, HEAD, True)


def test_github_context__push_posts_on_after_and_has_no_pr():
    ctx = context_from_env(_env("push"))
    assert (ctx.pr_number, ctx.head_sha) == (None, HEAD)


def test_github_context__workflow_dispatch_posts_on_github_sha():
    ctx = context_from_env(_env("workflow_dispatch"))
    assert (ctx.pr_number, ctx.head_sha) == (None, MERGE)


def test_github_context__workflow_run_takes_head_sha_and_pr_from_payload():
    ctx = context_from_env(_env("workflow_run"))
    assert (ctx.pr_number, ctx.head_sha, ctx.triggering_run_id, ctx.from_fork) == (7, HEAD, 555, False)


def test_github_context__workflow_run_links_the_gate_run_not_this_one(tmp_path):
    ctx = context_from_env(_env("workflow_run", GITHUB_SERVER_URL="https://github.example"))
    assert ctx.run_url == "https://github.example/octo/gate/actions/runs/99"
    assert ctx.gate_run_url == "https://github.example/octo/gate/actions/runs/555"
    payload = json.loads((EVENTS / "workflow_run.json").read_text())
    payload["workflow_run"]["run_attempt"] = 2
    (tmp_path / "e.json").write_text(json.dumps(payload))
    ctx = context_from_env(_env("workflow_run", GITHUB_EVENT_PATH=str(tmp_path / "e.json"), GITHUB_RUN_ATTEMPT="3"))
    assert ctx.gate_run_url == "https://github.com/octo/gate/actions/runs/555/attempts/2"


def test_github_context__other_events_link_this_run():
    ctx = context_from_env(_env("pull_request", GITHUB_RUN_ATTEMPT="2"))
    assert ctx.gate_run_url == ctx.run_url == "https://github.com/octo/gate/actions/runs/99/attempts/2"


def test_github_context__workflow_run_bad_run_attempt(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps({"workflow_run": {"id": 5, "run_attempt": "2"}}))
    with pytest.raises(BadInput, match="workflow_run.run_attempt '2' is not a positive integer"):
        context_from_env({"GITHUB_EVENT_NAME": "workflow_run", "GITHUB_EVENT_PATH": str(tmp_path / "e.json")})


def test_github_context__workflow_run_of_fork_has_no_pr_until_origin_fills_it():
    ctx = context_from_env(_env("workflow_run", "workflow_run_fork"))
    assert (ctx.pr_number, ctx.head_sha, ctx.from_fork) == (None, HEAD, True)
    filled = ctx.with_origin(ResultOrigin("octo/gate", 7, "d" * 40, "pull_request", "1"))
    assert (filled.pr_number, filled.head_sha) == (7, HEAD)  # the event's sha wins


def test_github_context__token_hidden_from_repr():
    ctx = context_from_env(_env("pull_request"))
    assert ctx.token == "s3cret-token-value"
    assert "s3cret" not in repr(ctx) and "s3cret" not in str(ctx)


def test_github_context__token_argument_overrides_env():
    assert context_from_env(_env("push"), token="other").token == "other"


def test_github_context__enterprise_urls_and_run_url():
    ctx = context_from_env(_env("push", GITHUB_API_URL="https://ghe.example/api/v3/",
                                GITHUB_SERVER_URL="https://ghe.example", GITHUB_RUN_ATTEMPT="2"))
    assert ctx.api_url == "https://ghe.example/api/v3"
    assert ctx.run_url == "https://ghe.example/octo/gate/actions/runs/99/attempts/2"


def test_github_context__defaults_outside_actions():
    ctx = context_from_env({})
    assert (ctx.repository, ctx.head_sha, ctx.api_url, ctx.run_url, ctx.can_post) == (
        None, None, "https://api.github.com", None, False)


def test_github_context__bad_repository_names_the_variable():
    with pytest.raises(BadInput, match="GITHUB_REPOSITORY"):
        context_from_env({"GITHUB_REPOSITORY": "no-slash"})


def test_github_context__unreadable_event_names_the_path(tmp_path):
    (tmp_path / "e.json").write_text("{nope")
    with pytest.raises(BadInput, match="GITHUB_EVENT_PATH"):
        context_from_env({"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(tmp_path / "e.json")})


def test_github_context__bad_head_sha_in_payload(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps({"workflow_run": {"head_sha": "zz"}}))
    with pytest.raises(BadInput, match="40 hex"):
        context_from_env({"GITHUB_EVENT_NAME": "workflow_run", "GITHUB_EVENT_PATH": str(tmp_path / "e.json")})


def test_github_context__origin_round_trips_and_rejects_bad_values(tmp_path):
    origin = ResultOrigin("octo/gate", 7, HEAD, "pull_request", "99")
    (tmp_path / "github.json").write_text(origin.to_json())
    assert ResultOrigin.read(tmp_path) == origin
    assert ResultOrigin.read(tmp_path / "missing") is None
    (tmp_path / "github.json").write_text(json.dumps({"schema": "parity-gate/github-origin", "pr_number": "7"}))
    with pytest.raises(BadInput, match="pr_number"):
        ResultOrigin.read(tmp_path)


def _payload(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_github_context__merge_group_posts_on_the_queue_head(tmp_path):
    event = _payload(tmp_path, {"merge_group": {"head_sha": "d" * 40, "base_sha": "b" * 40}})
    ctx = context_from_env({"GITHUB_EVENT_NAME": "merge_group", "GITHUB_EVENT_PATH": event, "GITHUB_SHA": MERGE})
    assert (ctx.head_sha, ctx.pr_number, ctx.unverified) == ("d" * 40, None, False)


@pytest.mark.parametrize("event, payload, unverified", [
    ("pull_request", "pull_request", False),
    ("pull_request_target", "pull_request_target", False),   # the base's workflow: trusted
    ("workflow_run", "workflow_run_fork", True),
    ("workflow_run", "workflow_run", False),
])
def test_github_context__unverified_is_a_forks_own_workflow(event, payload, unverified):
    assert context_from_env(_env(event, payload)).unverified is unverified


def test_github_context__fork_pull_request_and_its_trusted_rerun(tmp_path):
    data = json.loads((EVENTS / "workflow_run_fork.json").read_text())
    ctx = context_from_env(_env("workflow_run", GITHUB_EVENT_PATH=_payload(tmp_path, data)))
    assert ctx.triggering_event == "pull_request" and ctx.unverified
    data["workflow_run"]["event"] = "pull_request_target"
    ctx = context_from_env(_env("workflow_run", GITHUB_EVENT_PATH=_payload(tmp_path, data)))
    assert ctx.from_fork and not ctx.unverified


def test_github_context__unverified_context_keeps_the_255_limit():
    assert unverified_context("parity-gate") == "parity-gate (fork, unverified)"
    assert len(unverified_context("x" * 255)) == 255 and unverified_context("x" * 255).endswith(UNVERIFIED_SUFFIX)


def test_github_context__golden_sha_from_the_action_and_github_json(tmp_path):
    ctx = context_from_env(_env("pull_request", PARITY_GATE_GOLDEN_SHA="b" * 40))
    assert ctx.golden_sha == "b" * 40
    origin = ResultOrigin.from_context(ctx)
    (tmp_path / "github.json").write_text(origin.to_json())
    assert ResultOrigin.read(tmp_path).golden_sha == "b" * 40
    filled = context_from_env(_env("pull_request")).with_origin(origin)
    assert filled.golden_sha == "b" * 40
    with pytest.raises(BadInput, match="PARITY_GATE_GOLDEN_SHA"):
        context_from_env(_env("pull_request", PARITY_GATE_GOLDEN_SHA="HEAD~1"))


# ------------------------------------------------------------------ forks fail closed
def _pull(head_repo, event_extra: dict | None = None) -> dict:
    head = {"sha": HEAD, "ref": "bump"}
    if head_repo != "missing":
        head["repo"] = head_repo
    return {"number": 7, "pull_request": {"number": 7, "head": head,
                                          "base": {"sha": "b" * 40, "repo": {"full_name": "octo/gate"}}},
            **(event_extra or {})}


def _run_event(head_repository, event: str = "pull_request") -> dict:
    run = {"id": 556, "event": event, "head_sha": HEAD, "pull_requests": [],
           "repository": {"full_name": "octo/gate"}}
    if head_repository != "missing":
        run["head_repository"] = head_repository
    return {"workflow_run": run}


@pytest.mark.parametrize("event, payload, from_fork, unverified", [
    # GitHub sends `null` for the head repository of a PR whose fork was deleted
    ("pull_request", _pull(None), True, True),
    ("pull_request", _pull("missing"), True, True),
    ("pull_request", _pull({"full_name": None}), True, True),
    ("pull_request_review", _pull(None), True, True),
    ("pull_request_target", _pull(None), True, False),            # the base's workflow: still trusted
    ("workflow_run", _run_event(None), True, True),
    ("workflow_run", _run_event("missing"), True, True),
    ("workflow_run", _run_event(None, "pull_request_target"), True, False),
    ("workflow_run", _run_event({"full_name": "octo/gate"}), False, False),
    ("pull_request", _pull({"full_name": "octo/gate"}), False, False),
])
def test_github_context__unknown_head_repository_is_a_fork(tmp_path, event, payload, from_fork, unverified):
    ctx = context_from_env(_env(event, GITHUB_EVENT_PATH=_payload(tmp_path, payload)))
    assert (ctx.from_fork, ctx.unverified) == (from_fork, unverified)


def test_github_context__base_repository_missing_compares_with_github_repository(tmp_path):
    payload = _pull({"full_name": "octo/gate"})
    del payload["pull_request"]["base"]["repo"]
    assert not context_from_env(_env("pull_request", GITHUB_EVENT_PATH=_payload(tmp_path, payload))).from_fork
    payload = _pull({"full_name": "mallory/gate"})
    del payload["pull_request"]["base"]["repo"]
    assert context_from_env(_env("pull_request", GITHUB_EVENT_PATH=_payload(tmp_path, payload))).unverified
