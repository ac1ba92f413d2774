"""The gate image, really built (podman, from a debootstrap'd stand-in base)
and really run (buildah run, host network) against the fake GitHub server.

Needs podman, buildah and debootstrap (apt) and root; see docs/github.md."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.fake_github import FakeGitHub

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TAG = "localhost/parity-gate:test"
TOKEN = "ghs_container-token-7c1e55"
HEAD = "a" * 40


@pytest.fixture(scope="module")
def image() -> str:
    missing = [t for t in ("podman", "buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install -y podman buildah debootstrap")
    t0 = time.monotonic()
    proc = subprocess.run([str(ROOT / "scripts" / "build-test-image.sh"), TAG], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nbuild-test-image.sh: {time.monotonic() - t0:.0f} s\n{proc.stderr.strip()}")
    return TAG


@pytest.fixture
def container(image: str):
    name = subprocess.run(["buildah", "from", "--pull-never", image], capture_output=True, text=True,
                          check=True).stdout.strip()
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def _entrypoint(image: str) -> list[str]:
    out = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)["OCIv1"]["config"]["Entrypoint"]


def test_image__entrypoint_is_parity_gate_action_as_non_root(image):
    assert _entrypoint(image) == ["parity-gate", "action"]
    cfg = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True,
                                    text=True, check=True).stdout)["OCIv1"]["config"]
    assert cfg.get("User") == "gate"


def test_image__action_posts_comment_and_status_end_to_end(image, container, tmp_path):
    work = tmp_path / "workspace"
    shutil.copytree(FIXTURES / "results" / "fail", work / "result")
    shutil.copy(FIXTURES / "events" / "pull_request.json", work / "event.json")
    for p in [work, *work.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)  # the image's user is not root
    env = {"GITHUB_REPOSITORY": "octo/gate", "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_EVENT_PATH": f"{work}/event.json", "GITHUB_RUN_ID": "31", "GITHUB_SHA": "c" * 40,
           "GITHUB_OUTPUT": f"{work}/output", "GITHUB_STEP_SUMMARY": f"{work}/summary",
           "INPUT_RESULT_DIR": f"{work}/result", "INPUT_COMMENT": "always", "INPUT_STATUS_CONTEXT": "parity-gate"}
    with FakeGitHub(token=TOKEN) as gh:
        env["GITHUB_API_URL"] = gh.url  # loopback: buildah run shares the host network
        args = ["buildah", "run", "--isolation", "chroot", "-v", f"{work}:{work}", "--workingdir", str(work)]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        # buildah run has no pass-by-name form; a fake token on a test command line is fine
        args += ["--env", f"INPUT_GITHUB_TOKEN={TOKEN}", container, "--", *_entrypoint(image)]
        proc = subprocess.run(args, capture_output=True, timeout=120)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 1, out  # the fixture's verdict is a regression
    assert [s["state"] for s in gh.statuses] == ["pending", "failure"], out
    assert all(s["sha"] == HEAD and s["context"] == "parity-gate" for s in gh.statuses)
    (comment,) = gh.comments[("octo/gate", 7)]
    assert "parity-gate:comment" in comment["body"]
    assert gh.check_runs and gh.check_runs[0]["conclusion"] == "failure"
    assert "verdict=fail" in (work / "output").read_text()
    assert (work / "summary").stat().st_size > 0
    origin = json.loads((work / "result" / "github.json").read_text())
    assert (origin["pr_number"], origin["head_sha"]) == (7, HEAD)
    assert (work / "result" / "github.json").stat().st_uid != 0  # written as the image's user
    assert TOKEN not in out
