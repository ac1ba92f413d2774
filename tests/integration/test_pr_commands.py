"""`/parity-gate accept|diagnose|bisect` PR comments end to end against the
fake GitHub server: `parity-gate pr-command plan` (the hosted job: event,
permission, reaction, the failing run's artifact), then, with what the GPU
job would have written (precomputed fixtures: no engine runs here), `parity-gate
pr-command answer` (the commit through the contents API, the sticky reply).

The GPU job itself (record, diagnose, bisect on vLLM) is not run: diagnose's
answer is tested on a result folder whose verdict.json carries a diagnosis,
as `parity-gate diagnose` writes it (tests/integration/test_diagnose.py runs
the real one)."""
from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gate.core.errors import BadInput
from gate.github import pr_commands
from gate.github.context import ResultOrigin
from gate.github.outcome import comment_marker
from gate.github.publish import Runtime
from gate.github.retry import RetryPolicy
from tests.fake_github import ACTIONS_BOT, FakeGitHub, git_blob_sha

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOKEN = "ghs_pr-command-token-77"
REPO = "octo/gate"
HEAD = "a" * 40
SERVER = "https://github.example"
GATE_RUN = 555
OLD_GOLDEN = b'{"header": "old"}\n'


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _result_files(head_sha: str = HEAD, verdict: dict | None = None) -> dict[str, bytes]:
    verdict = verdict or json.loads((FIXTURES / "results" / "fail" / "verdict.json").read_text())
    origin = ResultOrigin(REPO, 7, head_sha, "pull_request", str(GATE_RUN))
    return {"verdict.json": json.dumps(verdict).encode(), "github.json": origin.to_json().encode(),
            "traces.jsonl": b"{}\n"}


@pytest.fixture
def world(gh: FakeGitHub) -> FakeGitHub:
    """PR #7 from a branch of the repository, whose gate failed in run 555."""
    gh.add_pull(REPO, 7, HEAD, head_ref="bump-vllm")
    gh.add_branch(REPO, "bump-vllm", HEAD, {"parity/golden/traces.jsonl": OLD_GOLDEN})
    gh.set_permission(REPO, "alice", "write")
    gh.set_permission(REPO, "mallory", "read")
    gh.set_permission(REPO, "tess", "triage")
    gh.set_permission(REPO, "mona", "maintain")
    gh.statuses.append({"sha": HEAD, "state": "failure", "context": "parity-gate",
                        "description": "FAIL: 2 of 3 checks failed",
                        "target_url": f"{SERVER}/{REPO}/actions/runs/{GATE_RUN}"})
    gh.add_artifact(REPO, GATE_RUN, "parity-gate-result", _result_files())
    return gh


def _failed_fork_pr(gh: FakeGitHub, alice: str, **pull: Any) -> None:
    """PR #7 from a fork (`pull` says which head), alice with role `alice`, its gate failed in run 555."""
    gh.add_pull(REPO, 7, HEAD, **pull)
    gh.set_permission(REPO, "alice", alice)
    gh.statuses.append({"sha": HEAD, "state": "failure", "context": "parity-gate", "description": "FAIL",
                        "target_url": f"{SERVER}/{REPO}/actions/runs/{GATE_RUN}"})
    gh.add_artifact(REPO, GATE_RUN, "parity-gate-result", _result_files())


def _event(tmp_path: Path, gh: FakeGitHub, body: str, user: str = "alice", *, on_pr: bool = True,
           number: int = 7, user_type: str = "User", action: str = "created") -> Path:
    (cid,) = gh.add_comments(REPO, number, [body], login=user)
    issue = {"number": number, **({"pull_request": {"url": f"{gh.url}/repos/{REPO}/pulls/{number}"}} if on_pr else {})}
    payload = {"action": action, "issue": issue, "repository": {"full_name": REPO},
               "comment": {"id": cid, "body": body, "user": {"login": user, "type": user_type}}}
    path = tmp_path / f"event-{cid}.json"
    path.write_text(json.dumps(payload))
    return path


def _env(gh: FakeGitHub, tmp_path: Path, event: Path | None = None) -> dict[str, str]:
    env = {"GITHUB_REPOSITORY": REPO, "GITHUB_EVENT_NAME": "issue_comment", "GITHUB_API_URL": gh.url,
           "GITHUB_SERVER_URL": SERVER, "GITHUB_RUN_ID": "9001", "GITHUB_SHA": "b" * 40, "GITHUB_TOKEN": TOKEN,
           "GITHUB_OUTPUT": str(tmp_path / "output")}
    if event is not None:
        env["GITHUB_EVENT_PATH"] = str(event)
    return env


def _run(argv: list[str], env: dict[str, str], session) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    pr_commands.add_arguments(parser)
    out = io.StringIO()
    rt = Runtime(env=env, session=session, stdout=out, sleep=Sleeps(), clock=lambda: 1_000_000.0,
                 retry=RetryPolicy())
    return pr_commands.pr_command(parser.parse_args(argv), rt), out.getvalue()


def _plan(gh, tmp_path, session, body: str, **kw) -> tuple[int, dict[str, str], Path]:
    event = _event(tmp_path, gh, body, **kw)
    out = tmp_path / "plan"
    code, _ = _run(["plan", "--out", str(out)], _env(gh, tmp_path, event), session)
    from tests.unit.test_workflow_commands import parse_outputs
    return code, parse_outputs((tmp_path / "output").read_text()), out


def _sticky(gh: FakeGitHub, number: int = 7) -> str:
    ours = [c for c in gh.comments.get((REPO, number), []) if c["user"]["login"] == ACTIONS_BOT]
    assert len(ours) == 1, ours
    assert comment_marker("parity-gate") in ours[0]["body"]
    return ours[0]["body"]


def _reactions(gh: FakeGitHub) -> list[str]:
    return [r["content"] for r in gh.reactions]


def _recorded_golden(tmp_path: Path, data: bytes = b'{"header": "new"}\n') -> Path:
    golden = tmp_path / "recorded"
    golden.mkdir()
    (golden / "traces.jsonl").write_bytes(data)
    return golden


# ---------------------------------------------------------------- accept
def test_pr_commands__accept_same_repo_commits_golden_and_answers(world, session, tmp_path):
    gh = world
    gh.add_comments(REPO, 7, [comment_marker("parity-gate") + "\n## parity-gate: FAIL\nthe report"],
                    login=ACTIONS_BOT)
    code, outputs, plan_dir = _plan(gh, tmp_path, session, "Looks intended.\n/parity-gate accept\nthanks")
    assert code == 0
    assert outputs["run"] == "true" and outputs["command"] == "accept"
    assert (outputs["vllm"], outputs["golden-vllm"], outputs["fork"]) == ("0.33.0", "0.32.0", "false")
    assert (outputs["head-sha"], outputs["head-ref"]) == (HEAD, "bump-vllm")
    assert (plan_dir / "result" / "verdict.json").is_file()  # the failing run's artifact, unpacked
    assert gh.requests_to("GET", r"/collaborators/alice/permission$")
    assert _reactions(gh) == ["eyes"]
    body = _sticky(gh)
    assert "the report" in body and "re-recording the golden on vLLM 0.33.0" in body

    golden = _recorded_golden(tmp_path)
    (golden / "sub").mkdir()
    (golden / "sub" / "extra.json").write_text("{}\n")
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(golden), "--exit-code", "0"],
                   _env(gh, tmp_path), session)
    assert code == 0
    assert gh.file_at(REPO, "bump-vllm", "parity/golden/traces.jsonl") == b'{"header": "new"}\n'
    assert gh.file_at(REPO, "bump-vllm", "parity/golden/sub/extra.json") == b"{}\n"
    put = gh.requests_to("PUT", r"/contents/parity/golden/traces.jsonl$")
    assert put[0].body["sha"] == git_blob_sha(OLD_GOLDEN) and put[0].body["branch"] == "bump-vllm"
    assert "sha" not in gh.requests_to("PUT", r"/contents/parity/golden/sub/extra.json$")[0].body  # a new file
    new_head = gh.branches[(REPO, "bump-vllm")]
    assert new_head != HEAD and "accepted by @alice" in gh.file_commits[-1]["message"].lower()
    (accepted,) = [s for s in gh.statuses if s["sha"] == new_head]
    assert accepted["state"] == "success" and accepted["context"] == "parity-gate"
    assert accepted["description"] == "accepted by @alice: golden re-recorded on vLLM 0.33.0"
    assert not [s for s in gh.statuses if s["sha"] == HEAD and s["state"] == "success"]
    body = _sticky(gh)
    assert "the report" in body  # the report stays; the reply replaced the "re-recording" one
    assert "re-recording the golden" not in body
    assert f"in {new_head}" in body and "FAIL: 2 of 3 checks failed" in body
    assert _reactions(gh) == ["eyes", "+1"]


def test_pr_commands__accept_same_golden_is_nothing_to_accept(world, session, tmp_path):
    gh = world
    code, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs["run"] == "true"
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(_recorded_golden(tmp_path, OLD_GOLDEN)),
                    "--exit-code", "0"], _env(gh, tmp_path), session)
    assert code == 0
    assert not gh.file_commits and not gh.requests_to("PUT", r"/contents/")
    assert "Nothing to accept" in _sticky(gh) and "already is what vLLM 0.33.0 records" in _sticky(gh)
    assert _reactions(gh) == ["eyes", "confused"]


def test_pr_commands__accept_refused_when_the_branch_moved(world, session, tmp_path):
    gh = world
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    gh.add_branch(REPO, "bump-vllm", "c" * 40)  # a push while the GPU job recorded
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(_recorded_golden(tmp_path)),
                    "--exit-code", "0"], _env(gh, tmp_path), session)
    assert code == 0
    assert not gh.file_commits
    assert f"moved on to {'c' * 40}" in _sticky(gh)


def test_pr_commands__accept_from_fork_attaches_with_instructions(gh, session, tmp_path):
    _failed_fork_pr(gh, "admin", head_repo="stranger/gate", head_ref="main")
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs["fork"] == "true"
    url = f"{SERVER}/{REPO}/actions/runs/9001/artifacts/77"
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(_recorded_golden(tmp_path)),
                    "--exit-code", "0", "--artifact-url", url], _env(gh, tmp_path), session)
    assert code == 0
    assert not gh.requests_to("PUT", r"/contents/") and not gh.file_commits
    body = _sticky(gh)
    assert f"[the artifact]({url})" in body and "unpack it into `parity/golden/`" in body
    assert _reactions(gh) == ["eyes", "+1"]


def test_pr_commands__deleted_fork_is_a_fork(gh, session, tmp_path):
    _failed_fork_pr(gh, "write", head_repo=None)
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs["fork"] == "true"


def test_pr_commands__record_failure_is_answered(world, session, tmp_path):
    gh = world
    _, _, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    work = tmp_path / "recorded"
    work.mkdir()
    (work / "error.json").write_text(json.dumps({"error": "vLLM engine failed to start: out of memory"}))
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(work), "--exit-code", "3"],
                   _env(gh, tmp_path), session)
    assert code == 3
    assert "Recording the golden on vLLM 0.33.0 failed (exit 3): vLLM engine failed to start" in _sticky(gh)
    assert not gh.file_commits


def test_pr_commands__contents_write_denied_is_exit_3(world, session, tmp_path):
    gh = world
    _, _, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    gh.grant({"statuses", "pull_requests", "issues"})  # a job without contents: write
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(_recorded_golden(tmp_path)),
                    "--exit-code", "0"], _env(gh, tmp_path), session)
    assert code == 3
    assert not gh.file_commits
    assert "GitHub refused the commit to `bump-vllm` (HTTP 403)" in _sticky(gh) and "`contents: write`" in _sticky(gh)
    assert _reactions(gh) == ["eyes", "confused"]


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("user, role", [("mallory", "read"), ("tess", "triage"), ("nobody-here", None)])
def test_pr_commands__no_write_permission_is_refused_with_a_reply(world, session, tmp_path, user, role):
    gh = world
    if role is None:
        gh.add_user(user)  # a stranger: GitHub answers role "read" on a public repository
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept", user=user)
    assert outputs == {"run": "false"}
    assert not (plan_dir / "plan.json").exists()
    assert gh.requests_to("GET", rf"/collaborators/{user}/permission$")
    assert not gh.requests_to("GET", r"/artifacts")  # nothing downloaded for them
    body = _sticky(gh)
    assert f"@{user} has the role `{role or 'read'}`" in body and "needs write, maintain or admin" in body
    assert _reactions(gh) == ["eyes", "confused"]


def test_pr_commands__unknown_user_is_refused(world, session, tmp_path):
    gh = world  # GitHub answers 404 for a login it does not know
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate diagnose", user="ghost-user")
    assert outputs == {"run": "false"}
    assert "@ghost-user has the role `none`" in _sticky(gh)


def test_pr_commands__maintain_may_run(world, session, tmp_path):
    _, outputs, _ = _plan(world, tmp_path, session, "/parity-gate diagnose", user="mona")
    assert outputs["run"] == "true"


@pytest.mark.parametrize("body, expect", [
    ("/parity-gate frobnicate", "`frobnicate` is not a command"),
    ("/parity-gate", "No command was given"),
    ("/parity-gate accept now please", "`accept now please` is not a command"),
])
def test_pr_commands__unknown_command_is_answered(world, session, tmp_path, body, expect):
    gh = world
    _, outputs, _ = _plan(gh, tmp_path, session, body)
    assert outputs == {"run": "false"}
    text = _sticky(gh)
    assert expect in text and "`/parity-gate diagnose`" in text
    assert _reactions(gh) == ["eyes", "confused"]


def test_pr_commands__comment_on_an_issue_is_answered(world, session, tmp_path):
    gh = world
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept", on_pr=False, number=12)
    assert outputs == {"run": "false"}
    assert "#12 is an issue; commands work in pull request comments only" in _sticky(gh, 12)
    assert not gh.requests_to("GET", r"/pulls/")


def test_pr_commands__bot_comment_is_answered_not_run(world, session, tmp_path):
    gh = world
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept", user="renovate[bot]", user_type="Bot")
    assert outputs == {"run": "false"}
    assert "@renovate\\[bot\\], a bot" in _sticky(gh)
    assert not gh.requests_to("GET", r"/collaborators/")


@pytest.mark.parametrize("state, expect", [
    ("success", "The gate passed on"), ("pending", "still running"), ("error", "without a verdict"),
    (None, "no `parity-gate` status"),
])
def test_pr_commands__nothing_to_accept_unless_the_check_failed(gh, session, tmp_path, state, expect):
    gh.add_pull(REPO, 7, HEAD)
    gh.set_permission(REPO, "alice", "write")
    if state is not None:
        gh.statuses.append({"sha": HEAD, "state": state, "context": "parity-gate", "description": "d",
                            "target_url": f"{SERVER}/{REPO}/actions/runs/{GATE_RUN}"})
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs == {"run": "false"}
    assert expect in _sticky(gh)
    assert not gh.requests_to("GET", r"/artifacts")


def test_pr_commands__stale_result_is_refused(world, session, tmp_path):
    gh = world
    gh.artifacts.clear()
    gh.add_artifact(REPO, GATE_RUN, "parity-gate-result", _result_files(head_sha="d" * 40))
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs == {"run": "false"}
    assert f"computed for {'d' * 40}, not for the PR's head {HEAD}" in _sticky(gh)


def test_pr_commands__expired_artifact_is_refused(world, session, tmp_path):
    gh = world
    for art in gh.artifacts.values():
        art["expired"] = True
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate diagnose")
    assert outputs == {"run": "false"}
    assert "`parity-gate-result` of run 555 has expired" in _sticky(gh)


def test_pr_commands__zip_with_a_path_outside_is_refused(world, session, tmp_path):
    import zipfile
    gh = world
    gh.artifacts.clear()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../escape.txt", "x")
    gh.add_artifact_zip(REPO, GATE_RUN, "parity-gate-result", buf.getvalue())
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs == {"run": "false"}
    assert not (tmp_path / "escape.txt").exists() and not (plan_dir / "escape.txt").exists()
    assert "not a plain relative file" in _sticky(gh)


def test_pr_commands__status_linking_elsewhere_is_refused(world, session, tmp_path):
    gh = world
    gh.statuses[-1]["target_url"] = "https://evil.example/octo/gate/actions/runs/555"
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate accept")
    assert outputs == {"run": "false"}
    assert "links to no workflow run of this repository" in _sticky(gh)


def test_pr_commands__quoted_command_and_plain_comment_run_nothing(world, session, tmp_path):
    gh = world
    for body in ("> /parity-gate accept\nwhy did you accept?", "```\n/parity-gate accept\n```", "lgtm"):
        _, outputs, _ = _plan(gh, tmp_path, session, body)
        assert outputs == {"run": "false"}
    assert not gh.reactions and not [c for c in gh.comments[(REPO, 7)] if c["user"]["login"] == ACTIONS_BOT]


def test_pr_commands__not_an_issue_comment_is_bad_input(world, session, tmp_path):
    env = _env(world, tmp_path, FIXTURES / "events" / "pull_request.json")
    env["GITHUB_EVENT_NAME"] = "pull_request"
    with pytest.raises(BadInput, match="GITHUB_EVENT_NAME=pull_request: pr-command reads an issue_comment event"):
        _run(["plan", "--out", str(tmp_path / "plan")], env, session)


def test_pr_commands__reply_keeps_to_the_comment_limit(world, session, tmp_path):
    gh = world
    gh.add_comments(REPO, 7, [comment_marker("parity-gate") + "\n" + "x" * 65_000], login=ACTIONS_BOT)
    _plan(gh, tmp_path, session, "/parity-gate frobnicate")
    body = _sticky(gh)
    assert len(body) <= 65_536 and "`frobnicate` is not a command" in body and "report cut" in body


# ---------------------------------------------------------------- diagnose, bisect
def test_pr_commands__diagnose_end_to_end_answers_with_the_diagnosis(world, session, tmp_path):
    gh = world
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate diagnose")
    assert outputs["run"] == "true" and outputs["command"] == "diagnose"
    assert "rerunning the ablations" in _sticky(gh)
    # What `parity-gate diagnose --result plan/result` leaves: the diagnosis in verdict.json.
    result = tmp_path / "diagnosed"
    shutil.copytree(plan_dir / "result", result)
    verdict = json.loads((result / "verdict.json").read_text())
    verdict["diagnosis"] = {
        "summary": "likely cause: logprobs_mode raw_logprobs -> processed_logprobs (setting "
                   "logprobs_mode=raw_logprobs restores parity)",
        "kind": "config", "not_ablated": [], "drift_start": None, "semantics": None, "budget_s": 300.0,
        "findings": [{"cause": "logprobs_mode raw_logprobs -> processed_logprobs", "knobs": ["logprobs_mode"],
                      "ablation": "logprobs_mode", "restores_parity": True, "partial": False, "status": "ran",
                      "setting": "logprobs_mode=raw_logprobs", "detail": "sampler max abs diff 0.72 -> 0",
                      "measures_after": {}, "result_dir": "diagnosis/00-logprobs_mode", "seconds": 40.0}]}
    (result / "verdict.json").write_text(json.dumps(verdict))
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(result), "--exit-code", "0"],
                   _env(gh, tmp_path), session)
    assert code == 0
    body = _sticky(gh)
    assert "likely cause: logprobs\\_mode raw\\_logprobs -&gt; processed\\_logprobs" in body
    assert ("| logprobs\\_mode raw\\_logprobs -&gt; processed\\_logprobs | yes | "
            "sampler max abs diff 0.72 -&gt; 0 |") in body
    assert _reactions(gh) == ["eyes", "+1"]
    assert not gh.file_commits


def test_pr_commands__bisect_plans_the_release_pair_and_answers(world, session, tmp_path):
    gh = world
    _, outputs, plan_dir = _plan(gh, tmp_path, session, "/parity-gate bisect")
    assert (outputs["command"], outputs["golden-vllm"], outputs["vllm"]) == ("bisect", "0.32.0", "0.33.0")
    out = tmp_path / "bisect"
    out.mkdir()
    (out / "bisect.json").write_text(json.dumps({
        "first_bad": "0.33.0", "release_notes": "https://github.com/vllm-project/vllm/releases/tag/v0.33.0",
        "probes": [{"name": "0.32.0", "moved": False}, {"name": "0.33.0", "moved": True}]}))
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(out), "--exit-code", "1"],
                   _env(gh, tmp_path), session)
    assert code == 0
    assert "first drifting release: **0.33.0** ([release notes](https://github.com/vllm-project/vllm/releases/" \
           "tag/v0.33.0)); 0.32.0 unchanged" in _sticky(gh)


def test_pr_commands__bisect_on_one_release_is_refused(world, session, tmp_path):
    gh = world
    verdict = json.loads((FIXTURES / "results" / "fail" / "verdict.json").read_text())
    verdict["candidate"]["manifest"]["vllm_version"] = "0.32.0"
    gh.artifacts.clear()
    gh.add_artifact(REPO, GATE_RUN, "parity-gate-result", _result_files(verdict=verdict))
    _, outputs, _ = _plan(gh, tmp_path, session, "/parity-gate bisect")
    assert outputs == {"run": "false"}
    assert "Nothing to bisect: the golden and the check both ran on 0.32.0" in _sticky(gh)


def test_pr_commands__github_failing_mid_plan_is_answered_and_exit_3(world, session, tmp_path):
    gh = world
    gh.fail("GET", r"/actions/runs/555/artifacts", status=404, times=1)  # a 4xx is not retried
    with pytest.raises(pr_commands.InfraError) as raised:
        _plan(gh, tmp_path, session, "/parity-gate diagnose")
    assert raised.value.exit_code == 3
    assert "GitHub failed while it ran: GitHub GET /repos/octo/gate/actions/runs/555/artifacts: HTTP 404" in _sticky(gh)
    assert _reactions(gh) == ["eyes", "confused"]


def test_pr_commands__token_that_may_not_write_is_exit_3(world, session, tmp_path):
    gh = world
    gh.read_only = True  # every write refused, as for a job without issues/pull-requests: write
    with pytest.raises(pr_commands.InfraError) as raised:
        _plan(gh, tmp_path, session, "/parity-gate frobnicate")
    assert raised.value.exit_code == 3 and "pull-requests: write" in raised.value.line()
    assert gh.requests_to("POST", r"/reactions$")[0].status == 403
    assert not gh.reactions


def test_pr_commands__the_real_cli_plans_and_answers(world, tmp_path):
    """`python -m gate pr-command plan` and `answer` as the workflow runs them."""
    import os
    import subprocess
    import sys
    gh = world
    event = _event(tmp_path, gh, "/parity-gate accept")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    env.update(_env(gh, tmp_path, event), PYTHONWARNINGS="ignore")

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gate", "pr-command", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    plan = cli("plan", "--out", "command")
    assert plan.returncode == 0, plan.stderr
    assert "run=true" in (tmp_path / "output").read_text()
    _recorded_golden(tmp_path)
    answer = cli("answer", "--plan", "command", "--work", "recorded", "--exit-code", "0")
    assert answer.returncode == 0, answer.stderr
    assert gh.file_at(REPO, "bump-vllm", "parity/golden/traces.jsonl") == b'{"header": "new"}\n'
    assert _reactions(gh) == ["eyes", "+1"] and "accepted." in _sticky(gh)


def test_pr_commands__gpu_job_that_left_nothing_is_answered(world, session, tmp_path):
    gh = world
    _, _, plan_dir = _plan(gh, tmp_path, session, "/parity-gate diagnose")
    code, _ = _run(["answer", "--plan", str(plan_dir), "--work", str(tmp_path / "work" / "result"),
                    "--exit-code", "3"], _env(gh, tmp_path), session)
    assert code == 3
    assert "The diagnosis did not finish: the GPU job left nothing" in _sticky(gh)
    assert _reactions(gh) == ["eyes", "confused"]
