"""`parity-gate action` (the container entrypoint) against the fake GitHub server."""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gate import action, cli
from gate.action import run_action
from gate.core.errors import BadInput, InfraError
from gate.github import action_bisect, action_inputs
from gate.github.action_inputs import ActionSettings, withhold_tokens
from gate.github.publish import Runtime
from gate.run.child import run_child
from tests.fake_github import FakeGitHub

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TOKEN = "ghs_action-token-LEAKCHECK-5f3a9c"
HEAD = "a" * 40


def _env(gh: FakeGitHub, tmp_path: Path, **inputs: str) -> dict[str, str]:
    env = {"GITHUB_REPOSITORY": "octo/gate", "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_EVENT_PATH": str(FIXTURES / "events" / "pull_request.json"), "GITHUB_API_URL": gh.url,
           "GITHUB_RUN_ID": "77", "GITHUB_SHA": "c" * 40,
           "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
           "INPUT_GITHUB_TOKEN": TOKEN, "INPUT_SUITE": "suite.yaml", "INPUT_GOLDEN": "golden"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return env


def _run(env: dict[str, str], session, check=None) -> tuple[int, str]:
    out = io.StringIO()
    rt = Runtime(env=env, session=session, stdout=out, sleep=lambda s: None)
    settings = ActionSettings.from_env(env)
    code = run_action(settings, rt, check) if check else run_action(settings, rt)
    return code, out.getvalue()


def _copy_result(name: str):
    def check(argv: list[str]) -> int:
        out = Path(argv[argv.index("--out") + 1])
        shutil.copytree(FIXTURES / "results" / name, out, dirs_exist_ok=True)
        return 1 if name == "fail" else 0
    return check


def test_action__settings_name_the_bad_key():
    with pytest.raises(BadInput, match=r"INPUT_COMMENT='sometimes'"):
        ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "INPUT_COMMENT": "sometimes"})
    with pytest.raises(BadInput, match="INPUT_GOLDEN is empty"):
        ActionSettings.from_env({"INPUT_SUITE": "s"})
    with pytest.raises(BadInput, match="INPUT_ENGINE_ARGS: 'eager' is not KEY=VALUE"):
        ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "INPUT_ENGINE_ARGS": "eager"})


def test_action__settings_accept_docker_style_hyphen_names_and_hide_token():
    s = ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "INPUT_GITHUB-TOKEN": "tok123",
                                 "INPUT_ENGINE_ARGS": "enforce_eager=true\n  max_num_seqs=64",
                                 "INPUT_FAIL-ON": "never"})
    assert s.github_token == "tok123" and "tok123" not in repr(s)
    assert s.engine_args == ("enforce_eager=true", "max_num_seqs=64") and s.fail_on == "never"


def test_action__settings_fall_back_to_github_token():
    s = ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "GITHUB_TOKEN": "from-env"})
    assert s.github_token == "from-env"
    s = ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "GITHUB_TOKEN": "from-env",
                                 "INPUT_GITHUB_TOKEN": "from-input"})
    assert s.github_token == "from-input"


def test_action__withhold_tokens_removes_every_github_token_and_keeps_the_rest():
    env = {"INPUT_GITHUB_TOKEN": "a", "INPUT_GITHUB-TOKEN": "b", "GITHUB_TOKEN": "c", "GH_TOKEN": "d",
           "ACTIONS_RUNTIME_TOKEN": "e", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "f", "ACTIONS_ID_TOKEN_REQUEST_URL": "g",
           "INPUT_RELEASE_TOKEN": "h", "GITHUB_PAT": "i", "HF_TOKEN": "keep", "GITHUB_REPOSITORY": "o/r",
           "INPUT_SUITE": "s"}
    removed = withhold_tokens(env)
    assert env == {"HF_TOKEN": "keep", "GITHUB_REPOSITORY": "o/r", "INPUT_SUITE": "s"}
    assert set(removed) == set("INPUT_GITHUB_TOKEN INPUT_GITHUB-TOKEN GITHUB_TOKEN GH_TOKEN ACTIONS_RUNTIME_TOKEN "
                               "ACTIONS_ID_TOKEN_REQUEST_TOKEN ACTIONS_ID_TOKEN_REQUEST_URL INPUT_RELEASE_TOKEN "
                               "GITHUB_PAT".split())


SECRETS = {"INPUT_GITHUB_TOKEN": TOKEN, "GITHUB_TOKEN": TOKEN, "GH_TOKEN": "gh-cli-LEAKCHECK-1",
           "ACTIONS_RUNTIME_TOKEN": "runtime-LEAKCHECK-2", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "oidc-LEAKCHECK-3"}
# What code under test would run to look for a token: its environment, as
# Python and as the kernel see it.
PROBE = ("import json, os; print(json.dumps([dict(os.environ), "
         "open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace')]))")


def test_action__no_process_started_by_the_check_can_read_the_token(gh, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith(("GITHUB_", "INPUT_", "ACTIONS_", "GH_"))]:
        monkeypatch.delenv(key)
    for key, value in {**_env(gh, tmp_path), **SECRETS, "HF_TOKEN": "hf-model-access"}.items():
        monkeypatch.setenv(key, value)
    seen: dict[str, str] = {}
    copy = _copy_result("fail")

    def check(argv: list[str]) -> int:
        # The engine's own process, a child it starts, and a diagnosis child.
        seen["check's process"] = json.dumps(dict(os.environ))
        seen["child"] = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                       check=True, timeout=60).stdout
        log = tmp_path / "diagnosis.log"
        assert run_child([sys.executable, "-c", PROBE], log, 60).returncode == 0
        seen["diagnosis child"] = log.read_text()
        return copy(argv)

    assert action.run(argparse.Namespace(), check=check) == 1
    assert set(seen) == {"check's process", "child", "diagnosis child"}
    for where, text in seen.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name} is readable in the {where}"
            assert f'"{name}"' not in text and f"{name}=" not in text, f"{name} is set in the {where}"
        assert "hf-model-access" in text  # a model's own credentials stay
    # ... while the publish step still writes, with the token from the settings
    assert [s["state"] for s in gh.statuses] == ["pending", "failure"]
    assert gh.comments[("octo/gate", 7)] and gh.check_runs
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in gh.requests)


def test_action__forged_precomputed_verdict_posts_error_not_pending(gh, session, tmp_path):
    result = tmp_path / "precomputed"
    shutil.copytree(FIXTURES / "results" / "pass", result)
    verdict = json.loads((result / "verdict.json").read_text())
    verdict["warnings"] = {}
    (result / "verdict.json").write_text(json.dumps(verdict))
    (result / "comment.md").write_text("FORGED-MARKDOWN")
    env = _env(gh, tmp_path, result_dir=str(result), suite="", golden="")
    with pytest.raises(BadInput, match="INPUT_RESULT_DIR=.*warnings"):
        _run(env, session, lambda argv: pytest.fail("check must not run"))
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]
    assert "the result is invalid" in gh.statuses[-1]["description"]
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "FORGED" not in comment["body"]


def test_action__check_that_wrote_a_forged_verdict_is_an_error(gh, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = _copy_result("pass")

    def check(argv: list[str]) -> int:
        copy(argv)
        out = Path(argv[argv.index("--out") + 1])
        (out / "verdict.json").write_text('{"schema": "parity-gate/verdict", "version": 1, "verdict": "pass"}')
        return 0

    with pytest.raises(BadInput, match="verdict.json"):
        _run(_env(gh, tmp_path), session, check)
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]


def test_action__pending_then_result_and_check_argv(gh, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []
    copy = _copy_result("fail")

    def check(argv: list[str]) -> int:
        seen.append(argv)
        assert [s["state"] for s in gh.statuses] == ["pending"]  # posted before the check starts
        return copy(argv)

    code, out = _run(_env(gh, tmp_path, engine_args="enforce_eager=true"), session, check)
    assert code == 1
    out_dir = tmp_path / "parity-gate-result"
    assert seen == [["check", "--suite", "suite.yaml", "--golden", "golden", "--out", str(out_dir), "--force",
                     "--fail-on", "regression", "--engine-arg", "enforce_eager=true"]]
    assert [s["state"] for s in gh.statuses] == ["pending", "failure"]
    assert all(s["sha"] == HEAD for s in gh.statuses)
    assert len(gh.comments[("octo/gate", 7)]) == 1
    assert '"pr_number": 7' in (out_dir / "github.json").read_text()


@pytest.mark.parametrize("code", [2, 3])
def test_action__check_exit_2_or_3_posts_error_and_keeps_code(gh, session, tmp_path, monkeypatch, code):
    monkeypatch.chdir(tmp_path)
    got, out = _run(_env(gh, tmp_path), session, lambda argv: code)
    assert got == code
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]
    assert f"exited {code}" in gh.statuses[-1]["description"]


def test_action__crash_posts_error_and_exits_3(gh, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def check(argv: list[str]) -> int:
        raise RuntimeError("CUDA error: an illegal memory access")

    with pytest.raises(InfraError, match="check crashed: RuntimeError"):
        _run(_env(gh, tmp_path), session, check)
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]


def test_action__fork_403_one_warning_report_kept_exit_code_preserved(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FakeGitHub(token=TOKEN, read_only=True) as gh:
        code, out = _run(_env(gh, tmp_path), session, _copy_result("fail"))
    assert code == 1
    warnings = [line for line in out.splitlines() if "two-workflow pattern" in line]
    assert len(warnings) == 1 and warnings[0].startswith("::warning title=parity-gate::")
    assert (tmp_path / "parity-gate-result" / "report.html").is_file()
    assert (tmp_path / "parity-gate-result" / "github.json").is_file()  # for publish on workflow_run


def test_action__precomputed_result_dir_skips_the_check(gh, session, tmp_path):
    result = tmp_path / "precomputed"
    shutil.copytree(FIXTURES / "results" / "pass", result)
    code, _ = _run(_env(gh, tmp_path, result_dir=str(result), suite="", golden=""), session,
                   lambda argv: pytest.fail("check must not run"))
    assert code == 0 and [s["state"] for s in gh.statuses] == ["pending", "success"]


def _leak_env(gh: FakeGitHub, tmp_path: Path) -> dict[str, str]:
    result = tmp_path / "result"
    shutil.copytree(FIXTURES / "results" / "fail", result)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    env.update(_env(gh, tmp_path, result_dir=str(result), status_context="leak / check"))
    env["GITHUB_TOKEN"] = TOKEN
    env["PYTHONPATH"] = str(ROOT)
    return env


def _assert_no_token(blobs: dict[str, bytes], tmp_path: Path) -> None:
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blobs[str(path)] = path.read_bytes()
    for where, data in blobs.items():
        assert TOKEN.encode() not in data, f"token leaked into {where}"
        assert TOKEN[-12:].encode() not in data, f"part of the token leaked into {where}"


def test_action__token_never_appears_in_any_output_byte(gh, tmp_path):
    gh.fail("POST", "/statuses/", 502, times=1)           # a retry path logs too
    gh.fail("POST", "/check-runs", 403, times=-1)          # and a permission path
    proc = subprocess.run([sys.executable, "-m", "gate", "-v", "action"], env=_leak_env(gh, tmp_path),
                          cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 1, proc.stderr.decode()
    assert gh.statuses and gh.comments
    blobs = {"stdout": proc.stdout, "stderr": proc.stderr}
    blobs.update({f"request {r.method} {r.path}": repr((r.query, r.body)).encode() for r in gh.requests})
    _assert_no_token(blobs, tmp_path)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in gh.requests)


def test_publish__token_never_appears_when_everything_fails(tmp_path, capfd, monkeypatch):
    with FakeGitHub(token=TOKEN, read_only=True) as gh:
        env = _leak_env(gh, tmp_path)
        for k in [k for k in os.environ if k.startswith(("GITHUB_", "INPUT_"))]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        code = cli.main(["-v", "publish", str(tmp_path / "result")])
    assert code == 3
    captured = capfd.readouterr()
    assert "could post nothing" in captured.err
    _assert_no_token({"stdout": captured.out.encode(), "stderr": captured.err.encode()}, tmp_path)


def test_action__shard_and_strict_paths_reach_the_check_argv():
    env = {"INPUT_SUITE": "s.yaml", "INPUT_GOLDEN": "g", "INPUT_SHARD": "2/4", "INPUT_STRICT_PATHS": "true"}
    argv = action_inputs.check_argv(ActionSettings.from_env(env), Path("out"))
    assert argv[argv.index("--shard") + 1] == "2/4" and "--strict-paths" in argv
    plain = action_inputs.check_argv(ActionSettings.from_env({"INPUT_SUITE": "s.yaml", "INPUT_GOLDEN": "g",
                                                       "INPUT_STRICT_PATHS": "false"}), Path("out"))
    assert "--shard" not in plain and "--strict-paths" not in plain
    with pytest.raises(BadInput, match=r"INPUT_SHARD='5/4': --shard '5/4' is not I/N with 1 <= I <= N"):
        ActionSettings.from_env(dict(env, INPUT_SHARD="5/4"))


# ------------------------------------------------------------------ every path ends in a final status
def _from_env(env: dict[str, str], session, check=None) -> tuple[int, str]:
    out = io.StringIO()
    rt = Runtime(env={k: v for k, v in env.items() if k != "INPUT_GITHUB_TOKEN"}, session=session, stdout=out,
                 sleep=lambda s: None)
    code = action.run_from_env(env, rt, check or (lambda argv: pytest.fail("check must not run")))
    return code, out.getvalue()


def test_action__bad_input_posts_pending_then_an_error_naming_it(gh, session, tmp_path):
    with pytest.raises(BadInput, match=r"INPUT_COMMENT='sometimes'"):
        _from_env(_env(gh, tmp_path, comment="sometimes"), session)
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]
    status = gh.statuses[-1]
    assert (status["sha"], status["context"]) == (HEAD, "parity-gate")
    assert status["description"].startswith("ERROR (bad input): INPUT_COMMENT='sometimes': must be one of")
    assert "\n" not in status["description"] and len(status["description"]) <= 140
    assert gh.comments == {} and gh.check_runs == []


def test_action__bad_input_goes_on_the_chosen_context(gh, session, tmp_path):
    with pytest.raises(BadInput, match="INPUT_ENGINE_ARGS"):
        _from_env(_env(gh, tmp_path, engine_args="eager", status_context="parity-gate / cuda"), session)
    assert {s["context"] for s in gh.statuses} == {"parity-gate / cuda"}


def test_action__bad_status_context_errors_on_the_default_context(gh, session, tmp_path):
    with pytest.raises(BadInput, match="INPUT_STATUS_CONTEXT: a status context is one line"):
        _from_env(_env(gh, tmp_path, status_context="x" * 300), session)
    assert [(s["state"], s["context"]) for s in gh.statuses] == [("pending", "parity-gate"),
                                                                 ("error", "parity-gate")]


def test_action__runner_file_that_is_a_folder_ends_in_an_error_status(gh, session, tmp_path):
    env = _env(gh, tmp_path)
    (tmp_path / "output").mkdir()
    with pytest.raises(BadInput, match="GITHUB_OUTPUT"):
        _from_env(env, session)
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]


def _action_process(gh: FakeGitHub, tmp_path: Path, **inputs: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    env.update(_env(gh, tmp_path, **inputs))
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, "-m", "gate", "action"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_action__bad_input_in_a_real_process_exits_2_with_an_error_status(gh, tmp_path):
    proc = _action_process(gh, tmp_path, comment="sometimes")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "INPUT_COMMENT='sometimes'" in stderr
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]


def test_action__sigterm_while_publishing_leaves_an_error_not_pending(gh, tmp_path):
    import signal
    import time
    result = tmp_path / "precomputed"
    shutil.copytree(FIXTURES / "results" / "pass", result)
    # pending goes up; the final status meets a 2-minute rate limit, and the job is cancelled meanwhile
    gh.fail("POST", "/statuses/", 429, headers={"Retry-After": "120"}, skip=1)
    proc = _action_process(gh, tmp_path, result_dir=str(result), suite="", golden="")
    end = time.monotonic() + 30
    while len(gh.requests_to("POST", "/statuses/")) < 2:
        assert time.monotonic() < end and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "cancelled by SIGTERM" in stderr
    assert [s["state"] for s in gh.statuses] == ["pending", "error"]
    assert "cancelled (SIGTERM)" in gh.statuses[-1]["description"]


def _bisect_env(gh, tmp_path, monkeypatch, **inputs):
    monkeypatch.chdir(tmp_path)
    return _env(gh, tmp_path, bisect="on-failure", **inputs)


def test_action__bisect_on_failure_puts_the_first_drifting_release_in_the_comment(gh, session, tmp_path, monkeypatch):
    """A recorded bisect answer (the bisect itself runs engines: tests/integration/test_bisect.py)."""
    seen: list[list[str]] = []

    def bisect(argv: list[str]) -> tuple[int, str]:
        seen.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        probes = [{"name": "0.32.0", "status": "good", "moved": False},
                  {"name": "0.32.1", "status": "pass", "moved": False},
                  {"name": "0.33.0", "status": "fail", "moved": True, "what": ["sampler logprobs moved"]}]
        (out / "bisect.json").write_text(json.dumps({
            "first_bad": "0.33.0", "probes": probes,
            "release_notes": "https://github.com/vllm-project/vllm/releases/tag/v0.33.0"}))
        return 1, ""

    env = _bisect_env(gh, tmp_path, monkeypatch)
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    code = run_action(ActionSettings.from_env(env), rt, _copy_result("fail"), bisect=bisect)
    assert code == 1   # the check's
    assert seen == [["bisect", "--suite", "suite.yaml", "--golden", "golden", "--good", "0.32.0", "--bad", "0.33.0",
                     "--on", "fail", "--out", str(tmp_path / "parity-gate-result" / "bisect")]]
    body = gh.comments[("octo/gate", 7)][0]["body"]
    assert ("first drifting release: **0.33.0** ([release notes](https://github.com/vllm-project/vllm/releases/"
            "tag/v0.33.0)); 0.32.0, 0.32.1 unchanged") in body
    assert [s["state"] for s in gh.statuses] == ["pending", "failure"]


def test_action__bisect_that_cannot_run_says_why_and_keeps_the_verdict(gh, session, tmp_path, monkeypatch):
    # the real bisect: no suite file here, so it refuses before installing anything
    code, _ = _run(_bisect_env(gh, tmp_path, monkeypatch), session, _copy_result("fail"))
    assert code == 1
    body = gh.comments[("octo/gate", 7)][0]["body"]
    assert "bisect could not run (exit 2): " in body and "suite.yaml" in body and "no such file" in body
    assert [s["state"] for s in gh.statuses] == ["pending", "failure"]


def test_action__bisect_on_the_same_release_is_not_run(gh, session, tmp_path, monkeypatch):
    def check(argv: list[str]) -> int:
        rc = _copy_result("fail")(argv)
        path = Path(argv[argv.index("--out") + 1]) / "verdict.json"
        doc = json.loads(path.read_text())
        doc["candidate"]["manifest"]["vllm_version"] = "0.32.0"
        path.write_text(json.dumps(doc))
        return rc

    def bisect(argv: list[str]) -> tuple[int, str]:
        raise AssertionError("no bisect between a release and itself")

    env = _bisect_env(gh, tmp_path, monkeypatch)
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    assert run_action(ActionSettings.from_env(env), rt, check, bisect=bisect) == 1
    body = gh.comments[("octo/gate", 7)][0]["body"]
    assert "bisect not run: the golden and the check both ran on 0.32.0" in body


def test_action__bisect_input_is_checked():
    with pytest.raises(BadInput, match="INPUT_BISECT='always'"):
        ActionSettings.from_env({"INPUT_SUITE": "s", "INPUT_GOLDEN": "g", "INPUT_BISECT": "always"})


# ------------------------------------------------------------------ phases (action.yml: pending, compute, publish)
def _no_token(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "INPUT_GITHUB_TOKEN"}


def _fake_bisect(argv: list[str]) -> tuple[int, str]:
    out = Path(argv[argv.index("--out") + 1])
    out.mkdir(parents=True)
    (out / "bisect.json").write_text(json.dumps({
        "first_bad": "0.33.0", "probes": [{"name": "0.32.0", "status": "good", "moved": False},
                                          {"name": "0.33.0", "status": "fail", "moved": True}]}))
    return 1, ""


def test_action__pending_phase_posts_pending_and_checks_the_inputs(gh, session, tmp_path):
    rt = Runtime(env=_env(gh, tmp_path), session=session, stdout=io.StringIO(), sleep=lambda s: None)
    assert action.run_pending(_env(gh, tmp_path), rt) == 0
    assert [s["state"] for s in gh.statuses] == ["pending"] and not gh.comments
    bad = _env(gh, tmp_path, comment="sometimes")
    with pytest.raises(BadInput, match="INPUT_COMMENT='sometimes'"):
        action.run_pending(bad, Runtime(env=bad, session=session, stdout=io.StringIO(), sleep=lambda s: None))
    assert [s["state"] for s in gh.statuses] == ["pending", "pending", "error"]


def test_action__compute_phase_checks_and_posts_nothing(gh, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _no_token(_env(gh, tmp_path))
    assert action.run_compute(env, _copy_result("fail")) == 1
    assert gh.requests == []  # no token, nothing posted
    assert not (tmp_path / "output").exists() and not (tmp_path / "summary").exists()
    origin = json.loads((tmp_path / "parity-gate-result" / "github.json").read_text())
    assert (origin["pr_number"], origin["head_sha"]) == (7, HEAD)


@pytest.mark.parametrize("name", ["INPUT_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_RUNTIME_TOKEN"])
def test_action__compute_phase_refuses_a_token(gh, tmp_path, name):
    env = _no_token(_env(gh, tmp_path))
    env[name] = TOKEN
    with pytest.raises(BadInput) as info:
        action.run_compute(env, lambda argv: pytest.fail("no check with a token in reach"))
    assert info.value.what == f"a GitHub token reached the compute phase ({name})"
    assert TOKEN not in info.value.line()
    env[name] = ""  # an empty variable holds no token
    assert action.run_compute(env, lambda argv: 0) == 0


def test_action__compute_phase_exit_2_or_3_and_crash(gh, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _no_token(_env(gh, tmp_path))
    assert action.run_compute(env, lambda argv: 3) == 3

    def crash(argv: list[str]) -> int:
        raise RuntimeError("CUDA error")

    with pytest.raises(InfraError, match="check crashed: RuntimeError: CUDA error"):
        action.run_compute(env, crash)


def test_action__compute_then_publish_puts_the_bisect_answer_in_the_comment(gh, session, tmp_path, monkeypatch):
    """The bisect runs in the compute phase (it runs engines); the publish
    phase writes its section again from the recorded answer, once."""
    monkeypatch.chdir(tmp_path)
    env = _env(gh, tmp_path, bisect="on-failure")
    code = action.run_compute(_no_token(env), _copy_result("fail"), bisect=_fake_bisect)
    assert code == 1 and gh.requests == []
    answer = tmp_path / "parity-gate-result" / "bisect" / action_bisect.BISECT_ANSWER
    assert json.loads(answer.read_text()) == {"exit_code": 1, "error": ""}
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    assert action.run_publish(env, rt, code) == 1
    assert [s["state"] for s in gh.statuses] == ["failure"]  # pending was the pending phase's
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "first drifting release: **0.33.0**; 0.32.0 unchanged" in comment["body"]
    assert (tmp_path / "parity-gate-result" / "comment.md").read_text().count("### Release bisect") == 1


def test_action__publish_phase_takes_only_a_number_and_a_line_from_the_bisect_answer(gh, session, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _env(gh, tmp_path, bisect="on-failure")
    _copy_result("fail")(["--out", str(tmp_path / "parity-gate-result")])
    (tmp_path / "parity-gate-result" / "bisect").mkdir()
    (tmp_path / "parity-gate-result" / "bisect" / action_bisect.BISECT_ANSWER).write_text('{"exit_code": "1", "error": 5}')
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    assert action.run_publish(env, rt, 1) == 1
    body = gh.comments[("octo/gate", 7)][0]["body"]
    assert "bisect could not run (exit 3): the compute phase's bisect answer is malformed" in body


def test_action__publish_phase_needs_the_compute_exit_code(gh, session, tmp_path):
    env = _env(gh, tmp_path)
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    with pytest.raises(BadInput, match="--check-exit-code is missing"):
        action.run_publish(env, rt, None)


def test_action__publish_phase_of_a_check_that_exited_2_is_an_error(gh, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _env(gh, tmp_path)
    rt = Runtime(env=env, session=session, stdout=io.StringIO(), sleep=lambda s: None)
    assert action.run_publish(env, rt, 2) == 2
    assert [s["state"] for s in gh.statuses] == ["error"]
    assert "parity-gate check exited 2" in gh.statuses[-1]["description"]
    assert "verdict=error" in (tmp_path / "output").read_text()


def test_action__compute_phase_in_a_real_process_refuses_a_token(gh, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    env.update(_env(gh, tmp_path))
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "gate", "action", "--phase", "compute"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and gh.requests == []
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "parity-gate: bad input: a GitHub token reached the compute phase")
    assert TOKEN not in proc.stdout + proc.stderr
