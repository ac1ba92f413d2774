"""Files that are not what they claim (docs/errors.md): a folder or
a FIFO where the Actions runner's files should be, FIFOs inside a model
folder. Through the real CLI or a subprocess with a timeout, so a
regression fails the test instead of blocking it forever."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._util import REPO
from tests.adversarial.test_suite_inputs import refused, snapshot

FIXTURES = REPO / "tests" / "fixtures"


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without any GitHub variables: nothing to post to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    return dict(env, PYTHONWARNINGS="ignore", **extra)


def _publish(result: Path, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gate", "publish", str(result)], cwd=cwd, env=_env(**variables),
                          capture_output=True, text=True, timeout=60)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def result(tmp_path) -> Path:
    dst = tmp_path / "result"
    shutil.copytree(FIXTURES / "results" / "fail", dst)
    return dst


# ------------------------------------------------------------------ GITHUB_OUTPUT, GITHUB_STEP_SUMMARY
@pytest.mark.parametrize("variable", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_files__runner_file_that_is_not_a_file_is_one_bad_input_line(tmp_path, result, variable, kind):
    target = tmp_path / "target"
    if kind == "folder":
        target.mkdir()
        expect = f"{variable}={target}: is a folder, not a file"
    else:
        os.mkfifo(target)
        expect = f"{variable}={target}: is a FIFO (named pipe), not a file"
    before = snapshot(tmp_path)
    refused(_publish(result, tmp_path, **{variable: str(target)}), expect,
            f"(hint: point {variable} at a file (the Actions runner sets it), or unset it outside Actions)")
    assert snapshot(tmp_path) == before


def test_files__runner_file_in_a_missing_folder(tmp_path, result):
    before = snapshot(tmp_path)
    refused(_publish(result, tmp_path, GITHUB_STEP_SUMMARY=str(tmp_path / "no" / "summary.md")),
            "GITHUB_STEP_SUMMARY=", "summary.md: its folder does not exist")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ FIFOs in a model folder
def test_files__fifo_named_like_a_weight_file_is_not_hashed(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 8}', encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"weights")
    os.mkfifo(model / "extra.safetensors")
    proc = _python(f"""
        from gate.core.identity import model_identity
        a = model_identity({str(model)!r})
        print(a["weights_sha256"])
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    os.remove(model / "extra.safetensors")
    proc2 = _python(f"from gate.core.identity import model_identity; print(model_identity({str(model)!r})"
                    "['weights_sha256'])", tmp_path)
    assert proc.stdout == proc2.stdout  # the FIFO was never part of the identity


def test_files__fifo_config_json_is_refused_not_read(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    proc = _python(f"""
        from gate.core.errors import BadInput
        from gate.core.identity import model_max_len, model_vocab_size
        for read in (model_max_len, model_vocab_size):
            try:
                read({str(model)!r})
            except BadInput as exc:
                print(exc.what)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{model / 'config.json'} is not a regular file"] * 2
    (tmp_path / "suite.yaml").write_text(json.dumps({"model": "model", "prompts": [{"id": "a", "token_ids": [1]}],
                                                     "sampling": [{"name": "g"}]}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "gate", "record", "--suite", "suite.yaml", "--out", "g"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    refused(proc, f"suite.yaml:1: model folder {model} has no config.json")
