"""Fork results never speak for the required context; merge queues; the
comment names the commits it was computed for. Against the fake GitHub server."""
from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest

from gate.action import run_action
from gate.core.errors import BadInput
from gate.github import publish
from gate.github.action_inputs import ActionSettings
from gate.github.context import UNVERIFIED_SUFFIX, ResultOrigin
from gate.github.outcome import comment_marker
from gate.github.publish import Runtime
from gate.github.retry import RetryPolicy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOKEN = "ghs_trust-token-LEAKCHECK-0c1d"
HEAD, BASE, QUEUE = "a" * 40, "b" * 40, "d" * 40
UNVERIFIED = "parity-gate" + UNVERIFIED_SUFFIX


def _event(tmp_path: Path, payload: dict) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return str(path)


def _pr(head_repo: str) -> dict:
    return {"number": 7, "pull_request": {
        "number": 7, "head": {"sha": HEAD, "repo": {"full_name": head_repo}},
        "base": {"sha": BASE, "ref": "main", "repo": {"full_name": "octo/gate"}}}}


def _env(gh, tmp_path: Path, event: str, event_path: str, **extra: str) -> dict[str, str]:
    return {"GITHUB_REPOSITORY": "octo/gate", "GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": event_path,
            "GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": "https://github.example", "GITHUB_RUN_ID": "4242",
            "GITHUB_SHA": "c" * 40, "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), **extra}


def _result(tmp_path: Path, name: str = "pass") -> Path:
    dst = tmp_path / "result"
    shutil.copytree(FIXTURES / "results" / name, dst)
    return dst


def _action(env: dict[str, str], session, name: str = "pass") -> tuple[int, str]:
    def check(argv: list[str]) -> int:
        shutil.copytree(FIXTURES / "results" / name, Path(argv[argv.index("--out") + 1]), dirs_exist_ok=True)
        return 0 if name == "pass" else 1

    out = io.StringIO()
    rt = Runtime(env=env, session=session, stdout=out, sleep=lambda s: None)
    settings = ActionSettings.from_env({**env, "INPUT_SUITE": "s.yaml", "INPUT_GOLDEN": "g",
                                        "INPUT_GITHUB_TOKEN": TOKEN, "INPUT_OUT": str(Path(env["GITHUB_OUTPUT"]).parent / "out")})
    return run_action(settings, rt, check), out.getvalue()


def _publish(argv: list[str], env: dict[str, str], session) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    publish.add_arguments(parser, "publish")
    out = io.StringIO()
    rt = Runtime(env={**env, "GITHUB_TOKEN": TOKEN}, session=session, stdout=out, sleep=lambda s: None,
                 clock=lambda: 1_000_000.0, retry=RetryPolicy())
    return publish.publish_command(parser.parse_args(argv), rt), out.getvalue()


# ------------------------------------------------------------------ the fork rule
def test_action_trust__forks_passing_result_on_workflow_run_is_unverified_never_required(gh, session, tmp_path):
    result = _result(tmp_path, "pass")
    (result / "github.json").write_text(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1").to_json())
    gh.add_pull("octo/gate", 7, HEAD)
    env = _env(gh, tmp_path, "workflow_run", str(FIXTURES / "events" / "workflow_run_fork.json"))
    code, out = _publish([str(result), "--status-context", "parity-gate"], env, session)
    assert code == 0
    assert [(s["context"], s["state"]) for s in gh.statuses] == [(UNVERIFIED, "success")]
    assert all(s["context"] != "parity-gate" for s in gh.statuses)
    assert "::notice title=parity-gate::this result comes from a workflow run of a fork" in out
    (comment,) = gh.comments[("octo/gate", 7)]
    assert comment_marker(UNVERIFIED) in comment["body"]
    assert "**Unverified**: computed by a workflow run from a fork" in comment["body"]
    assert "required check `parity-gate`" in comment["body"]


def test_action_trust__forks_missing_result_is_an_unverified_error(gh, session, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(gh, tmp_path, "workflow_run", str(FIXTURES / "events" / "workflow_run_fork.json"))
    code, _ = _publish([str(empty), "--exit-code", "3", "--reason", "not run for a fork's PR", "--comment", "never"],
                       env, session)
    assert code == 3
    assert [(s["context"], s["state"]) for s in gh.statuses] == [(UNVERIFIED, "error")]


def test_action_trust__action_on_a_forks_pull_request_posts_unverified(gh, session, tmp_path):
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("mallory/gate")))
    code, _ = _action(env, session, "pass")
    assert code == 0
    assert [(s["context"], s["state"]) for s in gh.statuses] == [(UNVERIFIED, "pending"), (UNVERIFIED, "success")]


def test_action_trust__pull_request_target_is_the_trusted_path(gh, session, tmp_path):
    env = _env(gh, tmp_path, "pull_request_target", _event(tmp_path, _pr("mallory/gate")))
    _action(env, session, "pass")
    assert [(s["context"], s["state"]) for s in gh.statuses] == [("parity-gate", "pending"), ("parity-gate", "success")]


def test_action_trust__same_repository_pull_request_posts_the_required_context(gh, session, tmp_path):
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("octo/gate")))
    _action(env, session, "fail")
    assert [s["context"] for s in gh.statuses] == ["parity-gate", "parity-gate"]


# ------------------------------------------------------------------ merge queue
def test_action_trust__merge_group_posts_on_the_queue_head_without_a_comment(gh, session, tmp_path):
    payload = {"action": "checks_requested",
               "merge_group": {"head_sha": QUEUE, "head_ref": "refs/heads/gh-readonly-queue/main/pr-7-" + BASE,
                               "base_sha": BASE, "base_ref": "refs/heads/main"}}
    env = _env(gh, tmp_path, "merge_group", _event(tmp_path, payload), PARITY_GATE_GOLDEN_SHA=BASE)
    code, _ = _action(env, session, "pass")
    assert code == 0
    assert [(s["sha"], s["state"]) for s in gh.statuses] == [(QUEUE, "pending"), (QUEUE, "success")]
    assert gh.comments == {}
    summary = (tmp_path / "summary").read_text()
    assert f"Computed for {QUEUE}; suite and golden from {BASE}." in summary


# ------------------------------------------------------------------ provenance
def test_action_trust__comment_and_summary_name_the_commits(gh, session, tmp_path):
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("octo/gate")), PARITY_GATE_GOLDEN_SHA=BASE)
    _action(env, session, "fail")
    (comment,) = gh.comments[("octo/gate", 7)]
    line = f"Computed for {HEAD}; suite and golden from {BASE}."
    assert comment["body"].rstrip().endswith(line)
    assert (tmp_path / "summary").read_text().rstrip().endswith(line)
    origin = ResultOrigin.read(tmp_path / "out")
    assert origin is not None and origin.golden_sha == BASE


def test_action_trust__published_artifact_keeps_its_golden_sha(gh, session, tmp_path):
    result = _result(tmp_path, "fail")
    (result / "github.json").write_text(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1", BASE).to_json())
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("octo/gate")))
    _publish([str(result)], env, session)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert f"Computed for {HEAD}; suite and golden from {BASE}." in comment["body"]


def test_action_trust__a_forged_golden_sha_is_refused(gh, session, tmp_path):
    result = _result(tmp_path, "fail")
    origin = json.loads(ResultOrigin("octo/gate", 7, HEAD, "pull_request", "1").to_json())
    origin["golden_sha"] = "[click](https://evil.example)"
    (result / "github.json").write_text(json.dumps(origin))
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("octo/gate")))
    with pytest.raises(BadInput, match="golden_sha must be 40 hex digits"):
        _publish([str(result)], env, session)
    assert gh.requests == []


def test_action_trust__bad_golden_sha_variable_is_bad_input(gh, session, tmp_path):
    env = _env(gh, tmp_path, "pull_request", _event(tmp_path, _pr("octo/gate")), PARITY_GATE_GOLDEN_SHA="main")
    with pytest.raises(BadInput, match="PARITY_GATE_GOLDEN_SHA='main' is not 40 hex digits"):
        _action(env, session)
