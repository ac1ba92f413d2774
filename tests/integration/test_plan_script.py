"""The `plan` job of examples/workflows/gate.yml (and sharded.yml, which
carries the same job), run as GitHub would run its script: bash, in a
checkout whose base commit pins one vLLM release and whose PR bumps it, in
each place projects pin vLLM. The `parity-gate` it calls is this checkout's
(`python -m gate`)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._util import git

ROOT = Path(__file__).resolve().parents[2]


def _plan_job(name: str = "gate.yml") -> dict:
    return yaml.safe_load((ROOT / "examples" / "workflows" / name).read_text())["jobs"]["plan"]


def _script(step_id: str | None = None, name: str | None = None) -> str:
    steps = _plan_job()["steps"]
    step = next(s for s in steps if (step_id and s.get("id") == step_id) or (name and s.get("name", "").startswith(name)))
    return step["run"]


def _commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Plan:
    def __init__(self, tmp: Path, base: dict[str, str], head: dict[str, str | None]) -> None:
        self.repo = tmp / "ws"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        self.base = _commit(self.repo, {"parity/suite.yaml": "name: s\n", **base}, "base")
        git(self.repo, "update-ref", "refs/remotes/origin/main", self.base)
        git(self.repo, "switch", "-q", "-c", "bump")
        self.head = _commit(self.repo, head, "head") if head else self.base
        self.temp = tmp / "runner-temp"
        self.temp.mkdir()
        self.output = tmp / "github_output"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        shim = self.bin / "parity-gate"
        shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m gate "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)

    def run(self, explicit: str = "", accepted: str = "") -> tuple[int, dict[str, str], str]:
        self.output.write_text("")
        env = {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(self.temp),
               "EVENT": "pull_request", "PR_BASE_REF": "main", "PR_BASE_SHA": self.base,
               "MERGE_GROUP_BASE_SHA": "", "RUNNER_TEMP": str(self.temp), "GITHUB_OUTPUT": str(self.output),
               "PARITY_GATE_VLLM": explicit, "ACCEPTED": accepted}
        proc = subprocess.run(["bash", "-c", _script("plan")], cwd=self.repo, env=env, capture_output=True,
                              text=True, timeout=60)
        outputs = dict(line.split("=", 1) for line in self.output.read_text().splitlines())
        return proc.returncode, outputs, proc.stdout + proc.stderr


PYPROJECT = '[project]\nname = "trainer"\nversion = "1"\ndependencies = ["torch", "vllm=={v}"]\n'
UV_LOCK = 'version = 1\n\n[[package]]\nname = "vllm"\nversion = "{v}"\nsource = {{ registry = "https://pypi.org/simple" }}\n'

# where the pin lives -> its files at release {v}
LOCATIONS = {
    "requirements.txt": {"requirements.txt": "numpy\nvllm=={v}\n"},
    "requirements-folder": {"requirements/gpu.txt": "vllm=={v} --hash=sha256:00\n"},
    "constraints.txt": {"requirements.txt": "vllm\n", "constraints.txt": "vllm=={v}\n"},
    "pyproject-pep621": {"pyproject.toml": PYPROJECT},
    "pyproject-optional": {"pyproject.toml": '[project]\nname = "t"\n[project.optional-dependencies]\n'
                                             'rollout = ["vllm[audio]=={v}"]\n'},
    "pyproject-dependency-groups": {"pyproject.toml": '[dependency-groups]\ngpu = ["vllm=={v}"]\n'},
    "pyproject-tool-uv": {"pyproject.toml": '[project]\nname = "t"\ndependencies = ["vllm>=0.30"]\n'
                                            '[tool.uv]\nconstraint-dependencies = ["vllm=={v}"]\n'},
    "pyproject-poetry": {"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.11"\nvllm = "{v}"\n'},
    "uv.lock": {"pyproject.toml": '[project]\nname = "t"\ndependencies = ["vllm>=0.30"]\n', "uv.lock": UV_LOCK},
    "poetry.lock": {"poetry.lock": '[[package]]\nname = "vllm"\nversion = "{v}"\n'},
    "dockerfile-from": {"Dockerfile": "FROM vllm/vllm-openai:v{v}\nCOPY . /app\n"},
    "dockerfile-pip": {"Dockerfile": "FROM python:3.11\nRUN pip install --no-cache-dir vllm=={v}\n"},
}


def _at(location: str, version: str) -> dict[str, str]:
    return {name: text.replace("{v}", version).replace("{{", "{").replace("}}", "}")
            for name, text in LOCATIONS[location].items()}


@pytest.mark.parametrize("location", sorted(LOCATIONS))
def test_plan__a_bump_in_each_pin_location_runs_the_gate_on_the_new_release(tmp_path, location):
    plan = Plan(tmp_path, _at(location, "0.31.0"), _at(location, "0.32.0"))
    rc, out, log = plan.run()
    assert rc == 0, log
    assert (out["run"], out["vllm"], out["base"]) == ("true", "0.32.0", plan.base)


@pytest.mark.parametrize("location", ["requirements.txt", "uv.lock", "dockerfile-from"])
def test_plan__an_unrelated_pr_skips_the_gpu_run(tmp_path, location):
    plan = Plan(tmp_path, {**_at(location, "0.32.0"), "src/app.py": "x = 1\n"}, {"src/app.py": "x = 2\n"})
    rc, out, log = plan.run()
    assert rc == 0, log
    assert out["run"] == "false"
    assert out["why"] == "vLLM pin unchanged (0.32.0); suite, golden and workflows unchanged"


def test_plan__a_suite_edit_runs_even_with_the_pin_unchanged(tmp_path):
    plan = Plan(tmp_path, _at("requirements.txt", "0.32.0"), {"parity/suite.yaml": "name: edited\n"})
    rc, out, _ = plan.run()
    assert (rc, out["run"], out["vllm"]) == (0, "true", "0.32.0")


def test_plan__an_unpinned_project_is_not_gated_and_an_unrelated_pr_stays_green(tmp_path):
    plan = Plan(tmp_path, {"requirements.txt": "vllm>=0.30\n", "src/app.py": "x = 1\n"}, {"src/app.py": "x = 2\n"})
    rc, out, log = plan.run()
    assert rc == 0, log
    assert out["run"] == "false" and out["vllm"] == ""
    assert out["why"].startswith("not gated: requirements.txt:1: vllm>=0.30 is a range, not one release")
    assert "::warning title=parity-gate::not gated: requirements.txt:1: vllm>=0.30 is a range" in log


def test_plan__a_pr_that_loosens_the_pin_gets_one_clear_error(tmp_path):
    plan = Plan(tmp_path, {"requirements.txt": "vllm==0.31.0\n"}, {"requirements.txt": "vllm>=0.31\n"})
    rc, out, log = plan.run()
    assert rc == 1
    problem = ("requirements.txt:1: vllm>=0.31 is a range, not one release: parity-gate tests one vLLM release "
               "(hint: pin one release (e.g. vllm==0.32.0), commit a uv.lock, or give the version explicitly "
               "(the workflow's PARITY_GATE_VLLM, parity-gate pin --vllm-version))")
    assert out == {"problem": problem}
    assert f"::error title=parity-gate::{problem}" in log
    # the failure step posts that line (cut to GitHub's 140 characters) as the `error` status
    failure = _plan_job()["steps"][-1]
    assert failure["if"] == "failure()" and failure["env"]["PROBLEM"] == "${{ steps.plan.outputs.problem }}"
    assert 'description="${PROBLEM:-' in failure["run"] and '${description:0:140}' in failure["run"]


def test_plan__the_explicit_version_gates_an_unpinned_project(tmp_path):
    """PARITY_GATE_VLLM is the release under test: a requirements edit does not change it (the image is
    built from it), an edit of the workflow that sets it does (.github/ changed)."""
    plan = Plan(tmp_path, {"requirements.txt": "vllm>=0.30\n", ".github/workflows/gate.yml": "v: 0.31.0\n"},
                {"requirements.txt": "vllm>=0.31\n"})
    rc, out, log = plan.run(explicit="0.32.0")
    assert rc == 0, log
    assert (out["run"], out["vllm"]) == ("false", "0.32.0")
    _commit(plan.repo, {".github/workflows/gate.yml": "v: 0.32.0\n"}, "bump the explicit release")
    rc, out, log = plan.run(explicit="0.32.0")
    assert (rc, out["run"], out["vllm"]) == (0, "true", "0.32.0"), log


def test_plan__a_commit_the_rerecord_workflow_accepted_keeps_its_status(tmp_path):
    plan = Plan(tmp_path, _at("requirements.txt", "0.31.0"),
                {**_at("requirements.txt", "0.32.0"), "parity/golden/traces.jsonl": "new\n"})
    rc, out, log = plan.run(accepted="accepted by @maintainer: golden re-recorded on vLLM 0.32.0")
    assert rc == 0, log
    assert (out["run"], out["accepted"], out["vllm"]) == ("false", "true", "0.32.0")
    status = next(s for s in _plan_job()["steps"] if str(s.get("name", "")).startswith("Required status now"))
    assert status["if"] == "steps.plan.outputs.accepted != 'true'"  # the accepted status is not overwritten
    accepted = next(s for s in _plan_job()["steps"] if s.get("id") == "accepted")["run"]
    assert '.creator.login == "github-actions[bot]"' in accepted and 'startswith("accepted by @")' in accepted


def test_plan__sharded_carries_the_same_plan_job():
    assert _plan_job("sharded.yml") == _plan_job("gate.yml")


# ------------------------------------------------------------------ rerecord.yml: the PR body
def _rerecord_step(prefix: str) -> str:
    steps = yaml.safe_load((ROOT / "examples" / "workflows" / "rerecord.yml").read_text())["jobs"]["pull-request"]["steps"]
    return next(s for s in steps if str(s.get("name", "")).startswith(prefix))["run"]


def _body(tmp_path: Path, exit_code: str, pinned: str = "0.31.0") -> str:
    report, temp = tmp_path / "report", tmp_path / "temp"
    report.mkdir()
    temp.mkdir()
    (report / "check-exit-code").write_text(f"{exit_code}\n")
    (report / "comment.md").write_text("## parity-gate FAIL\n\nsampled-token logprobs [hot]: max abs diff 0.77\n")
    (report / "check-error.txt").write_text("parity-gate: stale golden: golden was recorded from another model\n")
    (temp / "bumped.txt").write_text("bumped requirements.txt:3: 0.31.0 -> 0.32.0\n")
    env = {"PATH": os.environ["PATH"], "VLLM": "0.32.0", "PINNED": pinned, "REASON": "accept the 0.32 sampler change",
           "REPORT": str(report), "BODY": str(temp / "body.md"), "RUNNER_TEMP": str(temp),
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42"}
    proc = subprocess.run(["bash", "-c", _rerecord_step("Write the PR body")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return (temp / "body.md").read_text()


def test_rerecord__the_pr_body_carries_the_report_and_the_pin_bump(tmp_path):
    body = _body(tmp_path, "1")
    assert "**Reason:** accept the 0.32 sampler change" in body
    assert "**Pin:** vLLM 0.31.0 -> 0.32.0, in this same PR" in body and "- requirements.txt:3: 0.31.0 -> 0.32.0" in body
    assert "### What is accepted: vLLM 0.32.0 against the old golden" in body
    assert "sampled-token logprobs [hot]: max abs diff 0.77" in body
    assert "https://github.com/o/r/actions/runs/42" in body


def test_rerecord__a_comparison_that_could_not_run_says_why(tmp_path):
    body = _body(tmp_path, "2", pinned="0.32.0")
    assert "**Pin:** unchanged (vLLM 0.32.0)." in body
    assert "No comparison (check exited 2): `parity-gate: stale golden: golden was recorded from another model`" in body
    assert "## parity-gate FAIL" not in body
