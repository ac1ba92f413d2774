"""action.yml's own bash steps, really run.

Each `run:` script is taken from action.yml and run with bash as the runner
would (`bash --noprofile --norc -eo pipefail`), with its `env:` expressions
evaluated here (inputs, github.event, steps.*.outputs) and a stub `docker`
first on PATH. The stub records its argv (one JSON line a call), builds and
inspects images in a list, answers `ps` from a list of containers with
docker's filters, and can fail, or hang in `run` until `stop`. The error step
posts to the fake GitHub server on loopback; the golden step reads a real git
repository made here."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.github.context import UNVERIFIED_SUFFIX
from tests._util import git
from tests.fake_github import FakeGitHub

ROOT = Path(__file__).resolve().parent.parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
STEPS = ACTION["runs"]["steps"]
TOKEN = "ghs_action-scripts-LEAKCHECK-71d2"
HEAD = "a" * 40
REPO = "octo/gate"

STUB = r'''#!{python}
import hashlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

state = Path(os.environ["DOCKER_STUB_DIR"])
argv = sys.argv[1:]
keys = [k for k in os.environ.get("DOCKER_STUB_ENV_KEYS", "").split(",") if k]
phase = argv[argv.index("--phase") + 1] if argv[:1] == ["run"] and "--phase" in argv else None
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"argv": argv, "phase": phase, "env": {k: os.environ.get(k) for k in keys},
                         "environ": dict(os.environ)}) + "\n")
cmd = "inspect" if argv[:2] == ["image", "inspect"] else (argv[0] if argv else "")
fail = json.loads(os.environ.get("DOCKER_STUB_FAIL") or "{}")
if cmd in fail:
    print(f"docker stub: {cmd} fails", file=sys.stderr)
    sys.exit(fail[cmd])
store = state / "images.json"
images = json.loads(store.read_text()) if store.exists() else {}  # reference -> image ID


def image_id(seed):
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


if cmd == "inspect":
    ref = argv[-1]
    found = images.get(ref) or (ref if ref in images.values() else None)
    if found is None:
        sys.exit(1)
    if "--format" in argv:
        print(found)
    sys.exit(0)
if cmd in ("build", "pull"):
    ref = argv[argv.index("-t") + 1] if cmd == "build" else argv[-1]
    new = image_id(f"{cmd} {ref} {len(images)}")
    images[ref] = new
    store.write_text(json.dumps(images))
    if cmd == "build" and "--iidfile" in argv and not os.environ.get("DOCKER_STUB_NO_IID"):
        Path(argv[argv.index("--iidfile") + 1]).write_text(new)
    sys.exit(0)
if cmd == "ps":
    listed = state / "containers.json"
    filters = [argv[i + 1] for i, a in enumerate(argv) if a == "--filter"]
    labels = [f[len("label="):] for f in filters if f.startswith("label=")]
    states = [f[len("status="):] for f in filters if f.startswith("status=")]
    for c in json.loads(listed.read_text()) if listed.exists() else []:
        ok = all(c["labels"].get(l.partition("=")[0]) == l.partition("=")[2] if "=" in l else l in c["labels"]
                 for l in labels)
        if ok and (not states or c["state"] in states):
            print(c["id"])
    sys.exit(0)


def container():
    # docker run's own options, then the image, then the entrypoint's arguments.
    with_value = {"--name", "--label", "--shm-size", "--gpus", "--user", "-w", "-v", "-e", "--env", "--ipc"}
    env, workdir, i = {}, "/", 1
    while i < len(argv) and argv[i].startswith("-"):
        flag = argv[i]
        if flag in ("-e", "--env"):
            name, eq, value = argv[i + 1].partition("=")
            if eq:
                env[name] = value
            elif name in os.environ:
                env[name] = os.environ[name]
        elif flag == "-w":
            workdir = argv[i + 1]
        i += 2 if flag in with_value else 1
    return env, workdir, argv[i], argv[i + 1:]


if cmd == "run":
    hang = os.environ.get("DOCKER_STUB_RUN_HANG") == phase
    if hang:
        # The container's gate: SIGTERM (docker stop) ends it with exit 3.
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    env, workdir, image, args = container()
    (state / f"container-{phase}.json").write_text(json.dumps({"env": env, "image": image, "args": args}))
    # run.pid (what `stop` signals) before run-PHASE.pid (what a test waits for): a test that cancels as soon as
    # it sees the latter must find the former already this container's, not an earlier step's
    (state / "run.pid").write_text(str(os.getpid()))
    (state / f"run-{phase}.pid").write_text(str(os.getpid()))
    if hang:
        while True:
            time.sleep(0.05)
    rcs = json.loads(os.environ.get("DOCKER_STUB_RUN_RC") or "{}")
    if phase in rcs:
        sys.exit(rcs[phase])
    if os.environ.get("DOCKER_STUB_EXEC"):
        # The real gate for pending and publish, with only the variables
        # docker would pass; compute writes the fixture result it is given.
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if phase == "compute":
            fixture = os.environ["DOCKER_STUB_RESULT"]
            out = Path(workdir, env.get("INPUT_OUT") or "parity-gate-result")
            shutil.copytree(fixture, out, dirs_exist_ok=True)
            sys.exit(1 if fixture.endswith("fail") else 0)
        env.update({"PATH": os.environ["PATH"], "PYTHONPATH": os.environ["DOCKER_STUB_GATE"]})
        sys.exit(subprocess.run([sys.executable, "-m", "gate", "action", *args], env=env, cwd=workdir).returncode)
    sys.exit(0)
if cmd == "stop":
    pid = state / "run.pid"
    if not pid.exists():
        print("Error response from daemon: No such container", file=sys.stderr)
        sys.exit(1)
    os.kill(int(pid.read_text()), signal.SIGTERM)
sys.exit(0)
'''

_DEFAULT_SIGNALS_EXEC = ("import os, signal, sys; [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, "
                         "signal.SIGTERM)]; os.execvp(sys.argv[1], sys.argv[1:])")
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _lookup(ctx: dict[str, Any], path: str) -> Any:
    value: Any = ctx
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def evaluate(expr: str, ctx: dict[str, Any]) -> Any:
    """The subset of GitHub's expressions action.yml uses: context paths,
    'literals' and `||` (the first truthy value, else the last)."""
    value: Any = None
    for alt in (a.strip() for a in expr.split("||")):
        value = alt[1:-1].replace("''", "'") if alt.startswith("'") else _lookup(ctx, alt)
        if value not in (None, "", False, 0):
            return value
    return value


def render(text: str, ctx: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value = evaluate(m[1], ctx)
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return _EXPR.sub(one, str(text))


def _parse_outputs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<")[0]:
            name, delim = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delim:
                    break
                body.append(inner)
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


@dataclass
class StepRun:
    id: str
    rc: int | None              # None: skipped
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class Runner:
    """One job's worth of runner state: workspace, RUNNER_TEMP, the event, a stub docker."""

    root: Path
    event_name: str = "pull_request"
    event: dict[str, Any] = field(default_factory=dict)
    action_path: Path = ROOT
    api_url: str = "http://127.0.0.1:9"
    extra_env: dict[str, str] = field(default_factory=dict)
    steps: dict[str, StepRun] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workspace = self.root / "work" / "gate"
        self.temp = self.root / "runner-temp"
        self.bin = self.root / "bin"
        self.state = self.root / "docker-state"
        for d in (self.workspace, self.temp, self.bin, self.state):
            d.mkdir(parents=True, exist_ok=True)
        stub = self.bin / "docker"
        stub.write_text(STUB.replace("{python}", sys.executable))
        stub.chmod(0o755)
        (self.bin / "python3").symlink_to(sys.executable)
        if not self.event:
            self.event = pr_event()
        self.event_path = self.temp / "_github_workflow" / "event.json"
        self.event_path.parent.mkdir(parents=True, exist_ok=True)
        self.event_path.write_text(json.dumps(self.event))
        self.summary = self.temp / "_runner_file_commands" / "step_summary"
        self.summary.parent.mkdir(parents=True, exist_ok=True)

    # --- what the runner provides --------------------------------------------
    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(self.root),
                "LANG": "C.UTF-8", "CI": "true", "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": str(self.workspace), "RUNNER_TEMP": str(self.temp),
                "RUNNER_NAME": "gpu-runner-1", "GITHUB_EVENT_NAME": self.event_name,
                "GITHUB_EVENT_PATH": str(self.event_path), "GITHUB_REPOSITORY": REPO,
                "GITHUB_API_URL": self.api_url, "GITHUB_SERVER_URL": "https://github.example",
                "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SHA": "c" * 40,
                "GITHUB_REF": "refs/pull/7/merge", "GITHUB_STEP_SUMMARY": str(self.summary),
                "DOCKER_STUB_DIR": str(self.state), "DOCKER_STUB_GATE": str(ROOT), **self.extra_env}

    def context(self, inputs: dict[str, str]) -> dict[str, Any]:
        github = {"event": self.event, "event_name": self.event_name, "action_path": str(self.action_path),
                  "token": TOKEN}
        values = {}
        for name, spec in ACTION["inputs"].items():
            values[name] = inputs[name] if name in inputs else render(spec.get("default", ""), {"github": github})
        return {"inputs": values, "github": github,
                "steps": {k: {"outputs": v.outputs} for k, v in self.steps.items()}}

    def _prepare(self, step: dict[str, Any], inputs: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
        ctx = self.context(inputs)
        output = self.temp / "_runner_file_commands" / f"set_output_{step['id']}"
        output.write_text("")
        env = {**self.env(), "GITHUB_OUTPUT": str(output)}
        env.update({k: render(v, ctx) for k, v in (step.get("env") or {}).items()})
        script = self.root / f"step-{step['id']}.sh"
        script.write_text(step["run"])
        return ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], env, output

    def start(self, step_id: str, inputs: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        step = next(s for s in STEPS if s["id"] == step_id)
        argv, env, output = self._prepare(step, inputs or {})
        # the runner starts a step with default signal dispositions; a test run that ignores SIGINT (started in
        # the background by a non-interactive shell) would pass that on, and bash cannot trap a signal ignored
        # when it started: reset both before exec
        return subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGNALS_EXEC, *argv], env=env, cwd=self.workspace,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), output

    def finish(self, step_id: str, proc: subprocess.Popen, output: Path, timeout: float = 60) -> StepRun:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # a hung step fails its own test with what it printed, and leaves no process to the next test
            for pid_file in self.state.glob("run*.pid"):
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
            proc.kill()
            stdout, stderr = proc.communicate()
            raise AssertionError(f"step {step_id} did not end within {timeout} s\n{stdout}\n{stderr}") from None
        run = StepRun(step_id, proc.returncode, stdout, stderr, _parse_outputs(output.read_text()))
        self.steps[step_id] = run
        return run

    def step(self, step_id: str, inputs: dict[str, str] | None = None, timeout: float = 60) -> StepRun:
        proc, output = self.start(step_id, inputs)
        return self.finish(step_id, proc, output, timeout)

    def action(self, inputs: dict[str, str] | None = None, cancelled: bool = False) -> dict[str, StepRun]:
        """All steps in order, as the runner runs a composite action: after
        a failure only steps whose `if` asks for failure() or cancelled() run."""
        self.steps = {}
        failed = False
        for step in STEPS:
            cond = step.get("if", "success()")
            wanted = ((not failed and not cancelled and "success()" in cond)
                      or (failed and "failure()" in cond) or (cancelled and "cancelled()" in cond)
                      or "always()" in cond)
            if not wanted:
                self.steps[step["id"]] = StepRun(step["id"], None)
                continue
            run = self.step(step["id"], inputs)
            failed = failed or run.rc != 0
        return self.steps

    # --- what the stub saw ---------------------------------------------------
    def calls(self, sub: str | None = None) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c for c in calls if sub is None or c["argv"][:1] == [sub]]

    def run_argv(self, phase: str = "compute") -> list[str]:
        (call,) = [c for c in self.calls("run") if c["phase"] == phase]
        return call["argv"]

    def container(self, phase: str) -> dict[str, Any]:
        """What the stub's `docker run` passed into the container of a phase:
        its environment (the -e names resolved as docker does), image, args."""
        return json.loads((self.state / f"container-{phase}.json").read_text())


def pr_event(head_repo: str = REPO, base_sha: str = "b" * 40, base_ref: str = "main") -> dict[str, Any]:
    return {"number": 7, "pull_request": {
        "number": 7, "head": {"sha": HEAD, "ref": "bump", "repo": {"full_name": head_repo}},
        "base": {"sha": base_sha, "ref": base_ref, "repo": {"full_name": REPO}}}}


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.fixture
def runner(tmp_path) -> Runner:
    return Runner(tmp_path)


# A run that needs no base commit: the workspace's own suite and golden.
WS = {"golden-from": "workspace", "vllm-version": "0.32.0"}


# ------------------------------------------------------------------ image tag
def _copy_action(dst: Path) -> Path:
    dst.mkdir()
    for name in ("Dockerfile", "pyproject.toml", "README.md", "action.yml"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("gate", "templates"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def test_action_scripts__image_tag_is_a_content_hash_and_an_upgrade_rebuilds(tmp_path):
    action = _copy_action(tmp_path / "action")  # no .git: as a runner downloads it
    r = Runner(tmp_path / "job", action_path=action)

    def tag() -> str:
        r.steps = {}
        assert r.step("setup", {"vllm-version": "0.32.0"}).rc == 0
        assert r.step("image").rc == 0, r.steps["image"].stderr
        return r.steps["image"].outputs["ref"]

    first = tag()
    assert re.fullmatch(r"parity-gate:vllm-0\.32\.0-[0-9a-f]{16}", first)
    assert tag() == first
    (action / "README.md").write_text("edited\n")
    (action / "docs").mkdir()
    (action / "docs" / "new.md").write_text("a doc\n")
    (action / "gate" / "__pycache__").mkdir()
    (action / "gate" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert tag() == first  # nothing the image is built from changed
    builds = [c["argv"] for c in r.calls("build")]
    # Built every time (docker's layer cache makes that seconds), so the ID
    # that runs is the one this build gave, never a tag found on the host.
    assert len(builds) == 3 and all(b[-3:] == ["-t", first, str(action)] for b in builds)
    assert all("--pull" in b for b in builds)

    with open(action / "gate" / "cli.py", "a") as fh:
        fh.write("# a new release of the action\n")
    upgraded = tag()
    assert upgraded != first and upgraded.startswith("parity-gate:vllm-0.32.0-")
    assert [c["argv"][-2] for c in r.calls("build")][-1] == upgraded  # the upgrade built a new tag
    (action / "templates" / "comment.md.j2").write_text("changed\n")
    assert tag() != upgraded


@pytest.mark.parametrize("given", ["v0.32.0", "V0.32.0", "0.32.0"])
def test_action_scripts__leading_v_of_vllm_version_is_stripped(runner, given):
    assert runner.step("setup", {"vllm-version": given}).rc == 0
    assert runner.step("image").rc == 0
    (build,) = runner.calls("build")
    assert "VLLM_VERSION=0.32.0" in build["argv"]
    assert runner.steps["image"].outputs["ref"].startswith("parity-gate:vllm-0.32.0-")
    assert not any("vv" in a for a in build["argv"])


def test_action_scripts__prebuilt_image_is_pulled_not_built(runner):
    ref = "registry.example/gate@sha256:" + "1" * 64
    runner.action({**WS, "image": ref})
    assert runner.calls("pull")[0]["argv"] == ["pull", ref]
    pulled = json.loads((runner.state / "images.json").read_text())[ref]
    assert runner.calls("build") == [] and runner.steps["image"].outputs["image"] == pulled
    for phase in ("pending", "compute", "publish"):
        assert runner.container(phase)["image"] == pulled  # by ID


# ------------------------------------------------------------------ the token and the engine container
_TOKEN_REFS = ("github-token", "github.token", "GITHUB_TOKEN", "INPUT_GITHUB_TOKEN", "secrets.", "TOKEN")


def _engine_steps() -> list[dict[str, Any]]:
    """The steps that start the container of the code under test."""
    return [s for s in STEPS if "--phase compute" in s.get("run", "") or "--gpus" in s.get("run", "")
            or "gpu_args" in s.get("run", "")]


def test_action_scripts__no_step_that_runs_the_engine_container_references_the_token():
    (step,) = _engine_steps()
    assert step["id"] == "gate"
    for key, value in (step.get("env") or {}).items():
        for ref in _TOKEN_REFS:
            assert ref not in key and ref not in str(value), f"the gate step's env {key}: {value} names {ref}"
    for ref in _TOKEN_REFS:
        assert ref not in step["run"], f"the gate step's script names {ref}"
    # ... while the steps that post do take it, and run no GPU container.
    for step_id in ("pending", "publish"):
        (other,) = [s for s in STEPS if s["id"] == step_id]
        assert other["env"]["INPUT_GITHUB_TOKEN"] == "${{ inputs.github-token }}"
        assert "--gpus" not in other["run"] and "DOCKER_ARGS" not in other["run"] and f"--phase {step_id}" in other["run"]


def test_action_scripts__split_end_to_end_token_only_where_it_posts(gh, tmp_path):
    """The whole action, with a docker that runs the real gate for pending
    and publish (only the variables docker would pass) and writes a failing
    result for compute: pending first, then the result, while the compute
    container never sees the token, not even one a workflow put in the job's
    environment (GH_TOKEN here)."""
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_EXEC": "1", "GH_TOKEN": TOKEN,
                                          "DOCKER_STUB_RESULT": str(ROOT / "tests" / "fixtures" / "results" / "fail")})
    steps = r.action(WS)
    assert [steps[k].rc for k in ("pending", "gate", "publish")] == [0, 0, 1], steps["publish"].stderr
    assert "the gate's own failure status is up" in steps["error"].stdout  # exit 1: the error step only looks
    assert [x["state"] for x in gh.statuses] == ["pending", "failure"]
    assert len(gh.comments[(REPO, 7)]) == 1
    assert steps["gate"].outputs == {"check-exit-code": "1"}
    assert steps["publish"].outputs["verdict"] == "fail" and steps["publish"].outputs["exit-code"] == "1"
    compute = r.container("compute")
    assert compute["args"] == ["--phase", "compute"]
    assert TOKEN not in json.dumps(compute) and not [k for k in compute["env"] if "TOKEN" in k.upper()]
    (call,) = [c for c in r.calls("run") if c["phase"] == "compute"]
    assert TOKEN not in " ".join(call["argv"]) and "INPUT_GITHUB_TOKEN" not in call["environ"]
    for phase in ("pending", "publish"):
        assert r.container(phase)["env"]["INPUT_GITHUB_TOKEN"] == TOKEN
    origin = json.loads((r.workspace / "parity-gate-result" / "github.json").read_text())
    assert (origin["pr_number"], origin["head_sha"]) == (7, HEAD)


def test_action_scripts__bad_input_stops_before_the_engine_container(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_EXEC": "1"})
    steps = r.action({**WS, "comment": "sometimes"})
    assert steps["pending"].rc == 2 and steps["gate"].rc is None and steps["error"].rc == 0
    assert [c["phase"] for c in r.calls("run")] == ["pending"]
    assert [x["state"] for x in gh.statuses] == ["pending", "error"]
    assert "INPUT_COMMENT='sometimes'" in gh.statuses[-1]["description"]


def test_action_scripts__a_check_that_exited_3_is_published_as_an_error(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_EXEC": "1", "DOCKER_STUB_RUN_RC": '{"compute": 3}'})
    steps = r.action(WS)
    assert steps["gate"].rc == 0 and steps["publish"].rc == 3
    assert [x["state"] for x in gh.statuses] == ["pending", "error"]
    assert "parity-gate check exited 3" in gh.statuses[-1]["description"]
    assert [c["argv"][-2:] for c in r.calls("run") if c["phase"] == "publish"] == [["--check-exit-code", "3"]]


def test_action_scripts__precomputed_result_dir_runs_no_engine_container(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_EXEC": "1"})
    result = r.workspace / "downloaded"
    shutil.copytree(ROOT / "tests" / "fixtures" / "results" / "pass", result)
    steps = r.action({**WS, "result-dir": str(result)})
    assert [c["phase"] for c in r.calls("run")] == ["pending", "publish"]
    assert steps["publish"].rc == 0 and [x["state"] for x in gh.statuses] == ["pending", "success"]
    assert "--check-exit-code" not in r.run_argv("publish")


# ------------------------------------------------------------------ the image, by ID
def test_action_scripts__a_tag_left_on_the_host_is_never_run(runner):
    assert runner.step("setup", WS).rc == 0
    tag = runner.steps["setup"].outputs["tag"]
    planted = "sha256:" + "e" * 64
    (runner.state / "images.json").write_text(json.dumps({tag: planted}))  # an earlier job's image
    steps = runner.action(WS)
    built = steps["image"].outputs["image"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", built) and built != planted
    (build,) = runner.calls("build")
    assert "--pull" in build["argv"] and "--iidfile" in build["argv"]
    for phase in ("pending", "compute", "publish"):
        assert runner.container(phase)["image"] == built
    assert planted not in json.dumps(runner.calls("run"))
    assert f"gate image {tag} is {built}" in steps["image"].stdout


def test_action_scripts__a_prebuilt_tag_is_pulled_again_even_when_present(runner):
    planted = "sha256:" + "e" * 64
    (runner.state / "images.json").write_text(json.dumps({"registry.example/gate:1": planted}))
    runner.action({**WS, "image": "registry.example/gate:1"})
    assert [c["argv"] for c in runner.calls("pull")] == [["pull", "registry.example/gate:1"]]
    assert runner.container("compute")["image"] not in (planted, "registry.example/gate:1")


def test_action_scripts__a_prebuilt_digest_on_the_host_is_not_pulled(runner):
    ref = "registry.example/gate@sha256:" + "2" * 64
    (runner.state / "images.json").write_text(json.dumps({ref: "sha256:" + "3" * 64}))
    runner.action({**WS, "image": ref})
    assert runner.calls("pull") == [] and runner.container("compute")["image"] == "sha256:" + "3" * 64


def test_action_scripts__a_build_that_names_no_image_id_is_an_error(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_NO_IID": "1"})
    steps = r.action(WS)
    assert steps["image"].rc == 3 and r.calls("run") == []
    assert "docker gave no image ID for parity-gate:vllm-0.32.0-" in gh.statuses[0]["description"]


# ------------------------------------------------------------------ cache-dir: the runner user's alone
def test_action_scripts__a_new_cache_dir_is_made_private(runner, tmp_path):
    cache = tmp_path / "tool-cache" / "parity-gate"
    assert runner.action({**WS, "cache-dir": str(cache)})["gate"].rc == 0
    key = runner.steps["setup"].outputs["key"]
    assert (cache.stat().st_mode & 0o777, (cache / key).stat().st_mode & 0o777) == (0o700, 0o700)
    assert f"{cache / key}:/parity-gate-cache" in _pairs(runner.run_argv(), "-v")


@pytest.mark.parametrize("mode, where", [(0o775, "top"), (0o757, "top"), (0o770, "key")])
def test_action_scripts__a_cache_dir_others_can_write_is_refused(gh, tmp_path, mode, where):
    r = _with_gh(tmp_path, gh)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    assert r.step("setup", WS).rc == 0
    target = cache if where == "top" else cache / r.steps["setup"].outputs["key"]
    target.mkdir(exist_ok=True)
    target.chmod(mode)
    steps = r.action({**WS, "cache-dir": str(cache)})
    assert steps["gate"].rc == 2 and [c["phase"] for c in r.calls("run")] == ["pending"]
    line = (f"cache-dir {target} is writable by group or others (mode {mode:o}): another user could plant "
            f"compiled kernels that the gate loads; chmod go-w {target}")
    assert f"::error title=parity-gate::{line}" in steps["gate"].stdout.splitlines()
    assert gh.statuses[-1]["state"] == "error" and gh.statuses[-1]["description"].startswith(f"ERROR: cache-dir {target}")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another uid needs root")
def test_action_scripts__a_cache_dir_of_another_user_is_refused(gh, tmp_path):
    runner = _with_gh(tmp_path, gh)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 4242, 4242)
    steps = runner.action({**WS, "cache-dir": str(cache)})
    assert steps["gate"].rc == 2 and not [c for c in runner.calls("run") if c["phase"] == "compute"]
    assert (f"cache-dir {cache} is owned by uid 4242, not the runner's user (uid {os.geteuid()})"
            in steps["gate"].stdout)


def test_action_scripts__a_cache_key_that_is_a_link_is_refused(gh, tmp_path):
    runner = _with_gh(tmp_path, gh)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    assert runner.step("setup", WS).rc == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (cache / runner.steps["setup"].outputs["key"]).symlink_to(elsewhere)
    steps = runner.action({**WS, "cache-dir": str(cache)})
    assert steps["gate"].rc == 2 and "is a symbolic link" in steps["gate"].stdout


# ------------------------------------------------------------------ failure before the container
def _with_gh(tmp_path: Path, gh: FakeGitHub, **kw: Any) -> Runner:
    return Runner(tmp_path / "job", api_url=gh.url, **kw)


def test_action_scripts__bad_vllm_version_posts_an_error_status(gh, tmp_path):
    r = _with_gh(tmp_path, gh)
    steps = r.action({**WS, "vllm-version": "0.32.0; touch PWNED"})
    assert steps["setup"].rc == 2 and steps["gate"].rc is None and steps["error"].rc == 0
    assert "::error title=parity-gate::vllm-version '0.32.0; touch PWNED' is not a vLLM release" in steps["setup"].stdout
    (status,) = gh.statuses
    assert (status["sha"], status["state"], status["context"]) == (HEAD, "error", "parity-gate")
    assert status["description"].startswith("ERROR: vllm-version '0.32.0; touch PWNED' is not")
    assert len(status["description"]) <= 140
    assert status["target_url"] == "https://github.example/octo/gate/actions/runs/77"
    assert gh.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert r.calls() == [] and not (r.workspace / "PWNED").exists()
    assert TOKEN not in steps["error"].stdout + steps["error"].stderr


def test_action_scripts__failed_build_posts_an_error_status(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_FAIL": '{"build": 1}'})
    steps = r.action(WS)
    assert steps["image"].rc == 3 and steps["gate"].rc is None
    (status,) = gh.statuses
    assert status["state"] == "error" and "docker build of parity-gate:vllm-0.32.0-" in status["description"]


def test_action_scripts__failed_pull_posts_an_error_status(gh, tmp_path):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_FAIL": '{"pull": 1}'})
    r.action({**WS, "image": "registry.example/gate:1"})
    assert "could not pull the image 'registry.example/gate:1'" in gh.statuses[0]["description"]


@pytest.mark.parametrize("rc, expected", [
    (125, "docker run failed before the gate started (exit 125; --gpus needs the NVIDIA Container Toolkit)"),
    (137, "the gate container ended without a result (exit 137"),
])
def test_action_scripts__docker_run_that_never_ran_the_gate_posts_an_error(gh, tmp_path, rc, expected):
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_RUN_RC": json.dumps({"compute": rc})})
    steps = r.action(WS)
    assert steps["gate"].rc == 3 and steps["publish"].rc is None
    (status,) = gh.statuses
    assert status["state"] == "error" and expected in status["description"]


@pytest.mark.parametrize("rc, state", [(0, "success"), (1, "failure"), (2, "error"), (3, "error")])
def test_action_scripts__a_gate_that_ran_posts_its_own_status_and_the_error_step_stays_quiet(gh, tmp_path, rc, state):
    # The stub posts nothing: here the gate's own final status is put up for it.
    gh.statuses.append({"sha": HEAD, "state": state, "context": "parity-gate", "description": "the gate's"})
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_RUN_RC": json.dumps({"publish": rc})})
    steps = r.action(WS)
    assert steps["gate"].rc == 0 and steps["publish"].rc == rc
    assert gh.requests_to("POST", "/statuses/") == []
    if rc:  # the error step only looked
        assert [r.path for r in gh.requests] == [f"/repos/{REPO}/commits/{HEAD}/status"]
        assert f"the gate's own {state} status is up" in steps["error"].stdout


@pytest.mark.parametrize("rc, why", [(2, "bad input"), (3, "infrastructure failure")])
def test_action_scripts__a_gate_that_exited_without_its_final_status_gets_one(gh, tmp_path, rc, why):
    """Exit 2 or 3 with only `pending` up (say the gate died on a broken event
    payload before it could post): the error step ends the check."""
    gh.statuses.append({"sha": HEAD, "state": "pending", "context": "parity-gate", "description": "running"})
    r = _with_gh(tmp_path, gh, extra_env={"DOCKER_STUB_RUN_RC": json.dumps({"publish": rc})})
    steps = r.action(WS)
    assert steps["publish"].rc == rc and steps["error"].rc == 0
    status = gh.statuses[-1]
    assert (status["state"], status["context"]) == ("error", "parity-gate")
    assert status["description"] == f"ERROR: the gate exited {rc} ({why}) and its own status is not up; see the job log"


def test_action_scripts__empty_github_token_posts_nothing(gh, tmp_path):
    r = _with_gh(tmp_path, gh)
    steps = r.action({**WS, "vllm-version": "not a version", "github-token": ""})
    assert steps["error"].rc == 0 and "github-token is empty: no error status posted" in steps["error"].stdout
    assert gh.requests == []


def test_action_scripts__error_of_a_forks_run_is_never_on_the_required_context(gh, tmp_path):
    r = _with_gh(tmp_path, gh, event=pr_event(head_repo="mallory/gate"))
    r.action({**WS, "vllm-version": "x"})
    assert gh.statuses[0]["context"] == "parity-gate" + UNVERIFIED_SUFFIX
    assert UNVERIFIED_SUFFIX in next(s for s in STEPS if s["id"] == "error")["run"]


def test_action_scripts__error_status_survives_one_502(gh, tmp_path):
    gh.fail("POST", "/statuses/", 502, times=1)
    r = _with_gh(tmp_path, gh)
    r.action({**WS, "vllm-version": "x"})
    assert [x.status for x in gh.requests] == [200, 502, 201] and gh.statuses[0]["state"] == "error"


def test_action_scripts__error_status_waits_out_rate_limits(gh, tmp_path):
    gh.fail("POST", "/statuses/", 429, headers={"Retry-After": "1"})
    gh.secondary_rate_limit("POST", "/statuses/", retry_after="1")
    r = _with_gh(tmp_path, gh)
    r.action({**WS, "vllm-version": "x"})
    assert [x.status for x in gh.requests_to("POST", "/statuses/")] == [429, 403, 201]
    assert gh.statuses[0]["state"] == "error"


def test_action_scripts__error_status_gives_up_on_a_rate_limit_past_its_budget(gh, tmp_path):
    gh.fail("POST", "/statuses/", 429, headers={"Retry-After": "3600"}, times=-1)
    r = _with_gh(tmp_path, gh)
    steps = r.action({**WS, "vllm-version": "x"})
    assert steps["error"].rc == 0 and len(gh.requests_to("POST", "/statuses/")) == 1
    assert "could not post the error status (HTTP 429)" in steps["error"].stdout


@pytest.mark.parametrize("event_name, event", [
    ("pull_request", {"number": 7, "pull_request": {"number": 7, "head": {"sha": HEAD, "repo": None},
                                                     "base": {"sha": "b" * 40, "repo": {"full_name": REPO}}}}),
    ("workflow_run", {"workflow_run": {"id": 5, "event": "pull_request", "head_sha": HEAD,
                                       "head_repository": None, "repository": {"full_name": REPO}}}),
])
def test_action_scripts__error_of_a_deleted_forks_run_is_never_on_the_required_context(gh, tmp_path, event_name,
                                                                                      event):
    r = _with_gh(tmp_path, gh, event=event, event_name=event_name)
    r.action({**WS, "vllm-version": "x"})
    assert [s["context"] for s in gh.statuses] == ["parity-gate" + UNVERIFIED_SUFFIX]


# ------------------------------------------------------------------ docker run arguments
def test_action_scripts__docker_args_are_split_like_a_shell_and_never_run(runner):
    args = ('-v "/data/my models:/models:ro"\n'
            "  --env 'GREETING=hello world'\n"
            '-e QUOTED=\\"q\\" --label "x=$(touch PWNED)" `touch PWNED2`\n')
    runner.action({**WS, "docker-args": args})
    argv = runner.run_argv()
    tail = argv[argv.index("HF_HUB_DISABLE_TELEMETRY=1") + 1:]  # docker-args come last, before the image
    assert tail == ["-v", "/data/my models:/models:ro", "--env", "GREETING=hello world", "-e", 'QUOTED="q"',
                    "--label", "x=$(touch PWNED)", "`touch", "PWNED2`", runner.steps["image"].outputs["image"],
                    "--phase", "compute"]
    assert "/data/my models:/models:ro" not in runner.run_argv("publish")  # docker-args reach the compute only
    assert not list(runner.root.rglob("PWNED*"))


def test_action_scripts__unbalanced_quote_in_docker_args_is_a_clear_error(gh, tmp_path):
    r = _with_gh(tmp_path, gh)
    steps = r.action({**WS, "docker-args": "-v 'unclosed"})
    assert steps["gate"].rc == 2 and [c["phase"] for c in r.calls("run")] == ["pending"]
    assert "docker-args can't be split like a shell would: No closing quotation" in steps["gate"].stdout
    assert "No closing quotation" in gh.statuses[0]["description"]


@pytest.mark.parametrize("visible, gpus, expected", [
    ("1,2", "all", ['"device=1,2"']),
    ("GPU-3f2a9c1e-0000-1111-2222-333344445555", "all", ['"device=GPU-3f2a9c1e-0000-1111-2222-333344445555"']),
    (None, "all", ["all"]),
    ("1,2", "device=3", ["device=3"]),   # an explicit choice stands
    ("1,2", "", []),
])
def test_action_scripts__cuda_visible_devices_selects_the_gpus(tmp_path, visible, gpus, expected):
    r = Runner(tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": visible} if visible else {})
    r.action({**WS, "gpus": gpus})
    argv = r.run_argv()
    assert _pairs(argv, "--gpus") == expected
    assert "-e" in argv and "CUDA_VISIBLE_DEVICES" not in " ".join(argv)  # the container numbers its own


def test_action_scripts__container_environment(tmp_path):
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    proxy = "http://user:proxy-secret@proxy.example:3128"
    r = Runner(tmp_path / "job", extra_env={
        "HTTP_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "localhost", "no_proxy": "localhost",
        "SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": str(ca),
        "DOCKER_STUB_ENV_KEYS": "INPUT_CHECK_RUN,INPUT_COMMENT_AUTHOR,INPUT_GITHUB_TOKEN,INPUT_SUITE"})
    r.action({**WS, "comment-author": "my-app[bot]", "cache-dir": str(tmp_path / "cache")})
    argv = r.run_argv()
    env = _pairs(argv, "-e")
    for name in ("HTTP_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                 "INPUT_CHECK_RUN", "INPUT_COMMENT_AUTHOR", "PARITY_GATE_GOLDEN_SHA"):
        assert name in env, name  # by name: values stay off the command line
    assert "INPUT_GITHUB_TOKEN" not in env and "GITHUB_OUTPUT" not in env and "GITHUB_STEP_SUMMARY" not in env
    assert "HTTPS_PROXY" not in env and "ALL_PROXY" not in env  # unset ones are not named
    assert "proxy-secret" not in " ".join(argv) and TOKEN not in " ".join(argv)
    assert f"{ca}:{ca}:ro" in _pairs(argv, "-v")
    for pair in ("VLLM_NO_USAGE_STATS=1", "HF_HUB_OFFLINE=1", "USER=parity-gate",
                 "TORCHINDUCTOR_CACHE_DIR=/parity-gate-cache/torchinductor", "HF_HOME=/parity-gate-cache/huggingface",
                 "VLLM_CACHE_ROOT=/parity-gate-cache/vllm"):
        assert pair in env, pair
    key = r.steps["setup"].outputs["key"]
    assert f"{tmp_path / 'cache' / key}:/parity-gate-cache" in _pairs(argv, "-v")
    assert (tmp_path / "cache" / key).is_dir() and key.startswith("vllm-0.32.0-")
    assert _pairs(argv, "--shm-size") == ["16g"] and "--ipc=host" not in argv
    assert _pairs(argv, "--user") and "--init" in argv and "--rm" in argv
    (call,) = [c for c in r.calls("run") if c["phase"] == "compute"]
    assert call["env"]["INPUT_CHECK_RUN"] == "false"  # the default: see docs/github.md
    assert call["env"]["INPUT_COMMENT_AUTHOR"] == "my-app[bot]"
    assert call["env"]["INPUT_GITHUB_TOKEN"] is None  # not even in the docker CLI's environment
    assert call["env"]["INPUT_SUITE"] == "parity/suite.yaml"
    # The token goes to the containers that post, by name, and to no other.
    for phase in ("pending", "publish"):
        argv = r.run_argv(phase)
        assert "INPUT_GITHUB_TOKEN" in _pairs(argv, "-e") and TOKEN not in " ".join(argv)
        assert "--gpus" not in argv and f"{ca}:{ca}:ro" in _pairs(argv, "-v")


def test_action_scripts__mounts_keep_git_and_runner_command_files_out_of_reach(runner):
    (runner.workspace / ".git").mkdir()
    runner.action(WS)
    mounts = _pairs(runner.run_argv(), "-v")
    ws, temp = runner.workspace, runner.temp
    assert f"{ws}:{ws}" in mounts and f"{ws}/.git:{ws}/.git:ro" in mounts
    assert f"{temp}:{temp}" not in mounts  # not the runner's set_env/add_path files
    assert f"{runner.event_path}:{runner.event_path}:ro" in mounts
    # Step outputs and summary: only the publish container writes them, so
    # the code under test can't forge the action's `verdict` output.
    assert not any("_runner_file_commands" in m for m in mounts)
    output = temp / "_runner_file_commands" / "set_output_publish"
    publish = _pairs(runner.run_argv("publish"), "-v")
    assert f"{output}:{output}" in publish and f"{runner.summary}:{runner.summary}" in publish
    assert not any(m.startswith(f"{ws}:") for m in publish)  # no workspace where the token is


def test_action_scripts__no_cache_dir_keeps_caches_in_the_container(runner):
    runner.action(WS)
    argv = runner.run_argv()
    assert "TORCHINDUCTOR_CACHE_DIR=/tmp/parity-gate-home/.cache/torchinductor" in _pairs(argv, "-e")
    assert not any(m.endswith(":/parity-gate-cache") for m in _pairs(argv, "-v"))


def test_action_scripts__shm_size_can_be_dropped_for_ipc_host(runner):
    runner.action({**WS, "shm-size": "", "docker-args": "--ipc=host"})
    argv = runner.run_argv()
    assert "--shm-size" not in argv and "--ipc=host" in argv


def test_action_scripts__links_the_container_left_in_the_result_are_removed(runner, tmp_path):
    out = runner.workspace / "parity-gate-result"
    out.mkdir()
    (out / "verdict.json").write_text("{}")
    (out / "credentials").symlink_to(tmp_path / "runner-credentials")
    runner.action(WS)
    assert (out / "verdict.json").is_file() and not os.path.lexists(out / "credentials")


# ------------------------------------------------------------------ name, labels, stale containers, cancel
def test_action_scripts__container_is_named_and_labelled(runner):
    runner.action(WS)
    argv = runner.run_argv()
    (name,) = _pairs(argv, "--name")
    assert re.fullmatch(r"parity-gate-77-1-[0-9a-f]{8}", name)
    labels = _pairs(argv, "--label")
    assert {"parity-gate.action=1", "parity-gate.run=77-1", "parity-gate.runner=gpu-runner-1",
            f"parity-gate.runner-temp={runner.temp}"} <= set(labels)


def test_action_scripts__stale_containers_of_this_runner_and_exited_ones_are_removed(runner):
    mine = {"parity-gate.action": "1", "parity-gate.runner": "gpu-runner-1",
            "parity-gate.runner-temp": str(runner.temp)}
    other = {"parity-gate.action": "1", "parity-gate.runner": "gpu-runner-2", "parity-gate.runner-temp": "/r2/_temp"}
    (runner.state / "containers.json").write_text(json.dumps([
        {"id": "left1", "labels": mine, "state": "running"},        # a cancelled job on this runner
        {"id": "busy2", "labels": other, "state": "running"},       # another runner's job, maybe of this run
        {"id": "done3", "labels": other, "state": "exited"},
        {"id": "othr4", "labels": {"app": "x"}, "state": "exited"},  # not ours
        {"id": "same5", "labels": {**mine, "parity-gate.runner": "gpu-runner-1x"}, "state": "running"},
    ]))
    runner.action(WS)
    (rm,) = runner.calls("rm")
    assert rm["argv"] == ["rm", "-f", "done3", "left1"]
    assert runner.calls()[-1]["argv"][0] == "run"  # removed before the new one starts


def _ended(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has ended


def _wait_for(predicate, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _steps_before(runner: Runner, step_id: str, inputs: dict[str, str]) -> None:
    for step in STEPS:
        if step["id"] == step_id:
            return
        assert runner.step(step["id"], inputs).rc == 0, runner.steps[step["id"]].stdout


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_action_scripts__cancel_stops_the_container_by_name(gh, tmp_path, sig, code):
    runner = _with_gh(tmp_path, gh)
    _steps_before(runner, "gate", WS)
    runner.extra_env["DOCKER_STUB_RUN_HANG"] = "compute"
    proc, output = runner.start("gate", WS)
    _wait_for(lambda: (runner.state / "run-compute.pid").exists())
    proc.send_signal(sig)
    step = runner.finish("gate", proc, output)
    assert step.rc == code
    (name,) = _pairs(runner.run_argv(), "--name")
    assert [c["argv"] for c in runner.calls("stop")] == [["stop", "--time", "8", name]]
    # The compute container holds no token, so it can't post its own error:
    # the error step posts the reason the step left.
    assert runner.step("error").rc == 0
    (status,) = gh.statuses
    assert status["description"] == f"ERROR: cancelled ({signal.Signals(sig).name}) while the gate computed the result"


def test_action_scripts__cancel_while_publishing_leaves_the_status_to_the_gate(gh, tmp_path):
    runner = _with_gh(tmp_path, gh)
    _steps_before(runner, "publish", WS)
    runner.extra_env["DOCKER_STUB_RUN_HANG"] = "publish"
    proc, output = runner.start("publish", WS)
    _wait_for(lambda: (runner.state / "run-publish.pid").exists())
    proc.send_signal(signal.SIGTERM)
    assert runner.finish("publish", proc, output).rc == 143
    (name,) = _pairs(runner.run_argv("publish"), "--name")
    assert [c["argv"] for c in runner.calls("stop")] == [["stop", "--time", "8", name]]
    # The publish container has the token and posts its own `error` on SIGTERM.
    assert not (Path(runner.steps["setup"].outputs["dir"]) / "failure").exists()


def test_action_scripts__cancel_before_the_container_exists_leaves_the_reason(gh, tmp_path):
    r = _with_gh(tmp_path, gh)
    _steps_before(r, "gate", WS)
    r.extra_env["DOCKER_STUB_RUN_HANG"] = "compute"
    r.extra_env["DOCKER_STUB_FAIL"] = '{"stop": 1}'  # no such container yet (still pulling)
    proc, output = r.start("gate", WS)
    _wait_for(lambda: (r.state / "run-compute.pid").exists())
    proc.send_signal(signal.SIGTERM)
    assert r.finish("gate", proc, output).rc == 143
    _wait_for(lambda: _ended(int((r.state / "run-compute.pid").read_text())))  # the docker CLI too: it can't start one late
    assert r.step("error").rc == 0
    assert gh.statuses[0]["description"] == "ERROR: cancelled (SIGTERM) before the gate container started"


# ------------------------------------------------------------------ suite and golden from the base commit
def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(runner) -> dict[str, str]:
    """The runner's workspace as a checkout: base commit A, then the PR's B,
    which edits its own suite and golden (what the gate must not read)."""
    ws = runner.workspace
    git(ws, "init", "-q", "-b", "main")
    a = _commit(ws, {"parity/suite.yaml": "name: base-A\n", "parity/prompts.txt": "prompts of A\n",
                     "parity/golden/traces.jsonl": "golden of A\n", "requirements.txt": "vllm==0.31.0\n"}, "A")
    git(ws, "switch", "-q", "-c", "bump")
    b = _commit(ws, {"parity/suite.yaml": "name: pr-B\n", "parity/golden/traces.jsonl": "golden of B\n",
                     "requirements.txt": "vllm==0.32.0\n"}, "B")
    return {"A": a, "B": b}


def _golden(runner: Runner, inputs: dict[str, str] | None = None) -> StepRun:
    inputs = {"vllm-version": "0.32.0", **(inputs or {})}
    assert runner.step("setup", inputs).rc == 0
    return runner.step("golden", inputs)


def test_action_scripts__suite_and_golden_come_from_the_base_commit(runner, repo):
    runner.event = pr_event(base_sha=repo["A"])
    runner.event_path.write_text(json.dumps(runner.event))
    step = _golden(runner)
    assert step.rc == 0, step.stdout + step.stderr
    out = step.outputs
    assert out["sha"] == repo["A"]
    assert Path(out["suite"]).read_text() == "name: base-A\n"
    assert Path(out["golden"], "traces.jsonl").read_text() == "golden of A\n"
    assert Path(out["suite"]).with_name("prompts.txt").read_text() == "prompts of A\n"  # the suite's folder
    assert Path(out["suite"]).is_relative_to(runner.temp)
    assert f"suite and golden from {repo['A']} (pull_request.base.sha)" in step.stdout
    assert git(runner.workspace, "status", "--porcelain") == ""  # the checkout is untouched

    runner.extra_env["DOCKER_STUB_ENV_KEYS"] = "INPUT_SUITE,INPUT_GOLDEN,PARITY_GATE_GOLDEN_SHA"
    assert runner.step("image").rc == 0 and runner.step("gate").rc == 0
    (call,) = runner.calls("run")
    assert call["env"] == {"INPUT_SUITE": out["suite"], "INPUT_GOLDEN": out["golden"],
                           "PARITY_GATE_GOLDEN_SHA": repo["A"]}
    assert f"{out['dir']}:{out['dir']}:ro" in _pairs(call["argv"], "-v")


def test_action_scripts__a_rerun_reads_the_base_branch_tip_not_the_stale_event(runner, repo):
    ws = runner.workspace
    git(ws, "switch", "-q", "main")
    c = _commit(ws, {"parity/golden/traces.jsonl": "golden of C (re-recorded)\n"}, "C")
    git(ws, "update-ref", "refs/remotes/origin/main", c)
    git(ws, "switch", "-q", "bump")
    runner.event = pr_event(base_sha=repo["A"])  # the re-run replays the old event
    runner.event_path.write_text(json.dumps(runner.event))
    step = _golden(runner)
    assert step.rc == 0 and step.outputs["sha"] == c
    assert Path(step.outputs["golden"], "traces.jsonl").read_text() == "golden of C (re-recorded)\n"
    assert "(the tip of origin/main)" in step.stdout


def test_action_scripts__merge_group_reads_the_queue_base(runner, repo):
    runner.event_name = "merge_group"
    runner.event = {"merge_group": {"head_sha": repo["B"], "base_sha": repo["A"], "base_ref": "refs/heads/main"}}
    runner.event_path.write_text(json.dumps(runner.event))
    step = _golden(runner)
    assert step.rc == 0 and step.outputs["sha"] == repo["A"]
    assert Path(step.outputs["suite"]).read_text() == "name: base-A\n"


def test_action_scripts__base_sha_input_wins(runner, repo):
    step = _golden(runner, {"base-sha": repo["A"][:12]})
    assert step.rc == 0 and step.outputs["sha"] == repo["A"]


def test_action_scripts__golden_from_workspace_reads_the_checkout(runner, repo):
    step = _golden(runner, {"golden-from": "workspace"})
    assert step.rc == 0 and step.outputs == {"suite": "parity/suite.yaml", "golden": "parity/golden", "sha": "",
                                             "dir": ""}


def test_action_scripts__push_has_no_base_and_reads_the_workspace(runner, repo):
    runner.event_name, runner.event = "push", {"after": repo["B"]}
    runner.event_path.write_text(json.dumps(runner.event))
    step = _golden(runner)
    assert step.rc == 0 and step.outputs["sha"] == "" and "no base commit for a push run" in step.stdout


def test_action_scripts__missing_base_commit_is_one_clear_error(gh, tmp_path):
    r = _with_gh(tmp_path, gh, event=pr_event(base_sha="f" * 40))
    git(r.workspace, "init", "-q", "-b", "main")
    _commit(r.workspace, {"parity/suite.yaml": "x\n", "parity/golden/t.jsonl": "y\n"}, "shallow")
    steps = r.action({"vllm-version": "0.32.0"})
    assert steps["golden"].rc == 2 and steps["image"].rc is None and r.calls() == []
    errors = [line for line in steps["golden"].stdout.splitlines() if line.startswith("::error")]
    assert errors == [f"::error title=parity-gate::base commit {'f' * 40} (pull_request.base.sha) is not in the "
                      f"checkout: check out with fetch-depth: 0, or fetch it (git fetch origin {'f' * 40}), "
                      "or set golden-from: workspace"]
    (status,) = gh.statuses
    assert status["state"] == "error" and status["description"].startswith(f"ERROR: base commit {'f' * 40}")


def test_action_scripts__suite_missing_in_the_base_commit(runner, repo):
    step = _golden(runner, {"base-sha": repo["A"], "suite": "parity/new-suite.yaml"})
    assert step.rc == 2
    assert f"parity/new-suite.yaml is not in base commit {repo['A']}" in step.stdout


@pytest.mark.parametrize("bad", ["../outside/suite.yaml", "/etc/suite.yaml"])
def test_action_scripts__paths_outside_the_repository_are_refused(runner, repo, bad):
    step = _golden(runner, {"base-sha": repo["A"], "suite": bad})
    assert step.rc == 2 and "paths inside the repository" in step.stdout


def test_action_scripts__not_a_checkout_says_so(runner):
    step = _golden(runner, {"base-sha": "b" * 40})
    assert step.rc == 2 and "golden-from: base needs a git checkout" in step.stdout


def test_action_scripts__bad_golden_from(runner):
    step = _golden(runner, {"golden-from": "pr"})
    assert step.rc == 2 and "golden-from 'pr' must be base or workspace" in step.stdout
