"""The write token never enters the GPU container, shown inside the real image.

action.yml's `gate` step (the compute side: GPU, workspace, model, engine)
is run with bash as the runner runs it, with a `docker` on PATH that turns
its `docker run` into `buildah run --isolation chroot` of the built image,
passing exactly the variables, mounts, user and working folder docker would.
The code under test is played by a `.pth` file that the action's own
`docker-args` input mounts into the image's site-packages: it runs at the
start of every Python process in the container, before the gate does
anything, and dumps its environment and the environ and cmdline of every
process it can see under /proc (with chroot isolation that is the host's
PID namespace, so a superset of the container's processes).

A control runs the same probe in a container given the token the way the
pending and publish containers get it, so the probe is shown to find a
token where there is one.

Needs podman, buildah and debootstrap (apt) and root; see docs/github.md."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_github import FakeGitHub
from tests.integration.test_action_scripts import ROOT, Runner, StepRun
from tests.integration.test_action_scripts import TOKEN as DEFAULT_TOKEN  # what github.token evaluates to there

pytestmark = pytest.mark.container

TAG = "localhost/parity-gate:token-split"
TOKEN = "ghs_split-token-never-in-compute-93be1d"
WS = {"golden-from": "workspace", "vllm-version": "0.32.0", "gpus": "", "shm-size": ""}

# The code under test: runs at interpreter start in every Python process of
# the container (a plugin, a model's remote code would run later, and see
# no more than this).
PROBE = r'''
import json, os
def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<{type(exc).__name__}>"
procs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        procs[pid] = {"environ": _read(f"/proc/{pid}/environ"), "cmdline": _read(f"/proc/{pid}/cmdline")}
out = os.environ.get("PROBE_OUT") or "/probe-out"
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"dump-{os.getpid()}.json"), "w") as fh:
    json.dump({"pid": os.getpid(), "uid": os.getuid(), "environ": dict(os.environ),
               "self_environ": _read("/proc/self/environ"), "procs": procs}, fh)
'''

# docker, as far as action.yml's container steps use it, over buildah.
SHIM = r'''#!{python}
import json, os, subprocess, sys
argv = sys.argv[1:]
with open(os.environ["SHIM_LOG"], "a") as fh:
    fh.write(json.dumps(argv) + "\n")
if argv[:1] != ["run"]:
    sys.exit(0)  # ps, rm, stop: nothing to do here
flags = {"--rm", "--init"}
opts = {"--name", "--label", "--shm-size", "--gpus", "--user", "-w", "-v", "-e", "--env"}
cmd = ["buildah", "run", "--isolation", "chroot"]
i = 1
while argv[i].startswith("-"):
    flag = argv[i]
    if flag in flags:
        i += 1
        continue
    assert flag in opts, f"docker shim: unexpected option {flag}"
    value = argv[i + 1]
    if flag in ("-e", "--env"):
        name, eq, _ = value.partition("=")
        if eq:
            cmd += ["--env", value]
        elif name in os.environ:  # docker passes NAME alone from its own environment
            cmd += ["--env", f"{name}={os.environ[name]}"]
    elif flag == "-v":
        cmd += ["-v", value]
    elif flag == "-w":
        cmd += ["--workingdir", value]
    elif flag == "--user":
        cmd += ["--user", value]
    i += 2
image, args = argv[i], argv[i + 1:]
ctr = subprocess.run(["buildah", "from", "--pull-never", image.removeprefix("sha256:")], capture_output=True,
                     text=True, check=True).stdout.strip()
try:
    entry = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", image.removeprefix("sha256:")],
                                      capture_output=True, text=True, check=True).stdout)["OCIv1"]["config"]["Entrypoint"]
    sys.exit(subprocess.run([*cmd, ctr, "--", *entry, *args]).returncode)
finally:
    subprocess.run(["buildah", "rm", ctr], capture_output=True)
'''


@pytest.fixture(scope="module")
def image_id(tmp_path_factory) -> str:
    missing = [t for t in ("podman", "buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install -y podman buildah debootstrap")
    iid = tmp_path_factory.mktemp("iid") / "image-id"
    proc = subprocess.run([str(ROOT / "scripts" / "build-test-image.sh"), TAG], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PARITY_GATE_IIDFILE": str(iid)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = iid.read_text().strip()
    built = built if built.startswith("sha256:") else f"sha256:{built}"
    assert len(built) == len("sha256:") + 64
    return built  # by ID, as action.yml runs it


def _site_packages(image_id: str) -> str:
    ctr = subprocess.run(["buildah", "from", "--pull-never", image_id.removeprefix("sha256:")], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        return subprocess.run(["buildah", "run", "--isolation", "chroot", ctr, "--", "python3", "-c",
                               "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)


def _probe_files(tmp_path: Path) -> tuple[Path, Path]:
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.py").write_text(PROBE)
    (probe / "zz_code_under_test.pth").write_text("import os; exec(open('/probe/probe.py').read())\n")
    return probe, probe / "zz_code_under_test.pth"


def _dumps(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("dump-*.json"))]


def test_container__compute_side_of_action_yml_holds_no_token(image_id, tmp_path):
    site = _site_packages(image_id)
    probe, pth = _probe_files(tmp_path)
    with FakeGitHub(token=TOKEN) as gh:
        r = Runner(tmp_path / "job", api_url=gh.url)
        (r.bin / "docker").write_text(SHIM.replace("{python}", sys.executable))
        log = tmp_path / "docker-calls.jsonl"
        r.extra_env.update({"SHIM_LOG": str(log)})
        out = r.workspace / "probe-out"
        inputs = {**WS, "github-token": TOKEN, "docker-args": f"-v {probe}:/probe:ro -v {pth}:{site}/zz_code_under_test.pth:ro "
                                       f"-e PROBE_OUT={out}"}
        assert r.step("setup", inputs).rc == 0 and r.step("golden", inputs).rc == 0
        r.steps["image"] = StepRun("image", 0, outputs={"image": image_id, "ref": TAG})
        t0 = time.monotonic()
        step = r.step("gate", inputs, timeout=180)  # the compute step, with the action's default github-token
        took = time.monotonic() - t0
    assert step.rc == 0, step.stdout + step.stderr
    assert step.outputs.get("check-exit-code") in ("2", "3")  # no suite, no vLLM here: the check refuses
    (run,) = [json.loads(line) for line in log.read_text().splitlines() if json.loads(line)[:1] == ["run"]]
    assert image_id in run and run[-2:] == ["--phase", "compute"]
    dumps = _dumps(out)
    assert dumps, f"the probe never ran in the container ({took:.1f} s): {step.stdout}{step.stderr}"
    first = dumps[0]
    assert first["environ"]["INPUT_SUITE"] == "parity/suite.yaml"  # the container's own environment
    cmdlines = [p["cmdline"] for d in dumps for p in d["procs"].values()]
    assert any("--phase\0compute" in c for c in cmdlines)  # the gate's own process was seen
    for d in dumps:
        assert not [k for k in d["environ"] if "TOKEN" in k.upper()], d["environ"].keys()
        blob = json.dumps(d)
        for token in (TOKEN, DEFAULT_TOKEN):
            assert token not in blob, f"the token is readable in the compute container (pid {d['pid']})"
    assert gh.requests == []  # the compute side posts nothing
    print(f"\ncompute container: {len(dumps)} Python processes probed, {len(first['procs'])} processes seen, "
          f"{took:.1f} s")


def test_container__the_probe_finds_a_token_passed_as_pending_and_publish_get_it(image_id, tmp_path):
    """The control: the same probe in a container given INPUT_GITHUB_TOKEN
    by name (as the pending and publish steps pass it) reports it, in its
    environment and in /proc of the gate's process."""
    site = _site_packages(image_id)
    probe, pth = _probe_files(tmp_path)
    out = tmp_path / "probe-out"
    out.mkdir()
    ctr = subprocess.run(["buildah", "from", "--pull-never", image_id.removeprefix("sha256:")], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        subprocess.run(["buildah", "run", "--isolation", "chroot", "--user", "0:0", "-v", f"{probe}:/probe:ro",
                        "-v", f"{pth}:{site}/zz_code_under_test.pth:ro", "-v", f"{out}:{out}",
                        "--env", f"PROBE_OUT={out}", "--env", f"INPUT_GITHUB_TOKEN={TOKEN}", ctr, "--",
                        "parity-gate", "--help"], capture_output=True, timeout=120)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
    (dump,) = _dumps(out)
    assert dump["environ"]["INPUT_GITHUB_TOKEN"] == TOKEN
    assert TOKEN in dump["self_environ"] and TOKEN in dump["procs"][str(dump["pid"])]["environ"]
