"""Data loss: an output folder is never an input, never
contains one, is never the current, home or workspace folder; --force only
replaces a folder parity-gate wrote; one writer at a time; and the inputs are
byte-identical after every command. Everything here runs the real CLI on
traces written by hand (no engine)."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import MARKER, StagedDir
from gate.run.outdir import Stage
from tests._util import record, run_cli, write_trace


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (folders as None)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def proj(tmp_path) -> Path:
    """A project folder holding two trace sets and an unrelated file."""
    write_trace(tmp_path / "golden", [record(), record(prompt_id="p1")])
    write_trace(tmp_path / "unchanged", [record(), record(prompt_id="p1")])
    (tmp_path / "notes.txt").write_text("my notes\n")
    return tmp_path


def _assert_refused(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("out, what", [
    ("golden", "is also an input"),
    (".", "current folder"),
    ("", "current folder"),
    ("..", "current folder"),
    ("golden/sub", "lies inside the input golden"),
])
def test_outputs__force_never_deletes_an_input_or_the_current_folder(proj, out, what):
    before = _snapshot(proj)
    proc = run_cli("compare", "golden", "unchanged", "--out", out, "--force", cwd=proj)
    _assert_refused(proc, what)
    assert _snapshot(proj) == before


def test_outputs__out_containing_both_inputs_is_refused_and_nothing_is_deleted(proj):
    parent = proj.parent
    before = _snapshot(proj)
    proc = run_cli("compare", proj / "golden", proj / "unchanged", "--out", proj.name, "--force", cwd=parent)
    _assert_refused(proc, "contains the input")
    assert _snapshot(proj) == before


def test_outputs__home_and_workspace_are_protected(proj, monkeypatch):
    env_home = proj / "home"
    env_home.mkdir()
    (env_home / "keep.txt").write_text("x")
    monkeypatch.setenv("HOME", str(env_home))
    proc = run_cli("compare", "golden", "unchanged", "--out", "home", "--force", cwd=proj)
    _assert_refused(proc, "is the home folder")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(proj / "ws"))
    (proj / "ws").mkdir()
    proc = run_cli("compare", "golden", "unchanged", "--out", "ws", "--force", cwd=proj)
    _assert_refused(proc, "workspace root")
    assert (env_home / "keep.txt").read_text() == "x"


def test_outputs__force_replaces_only_folders_parity_gate_wrote(proj):
    first = run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj)
    assert first.returncode == 0, first.stderr
    assert (proj / "res" / MARKER).is_file()
    again = run_cli("compare", "golden", "unchanged", "--out", "res", "--force", cwd=proj)
    assert again.returncode == 0, again.stderr
    (proj / "res" / "mine.txt").write_text("a file the user put there")
    before = _snapshot(proj)
    proc = run_cli("compare", "golden", "unchanged", "--out", "res", "--force", cwd=proj)
    _assert_refused(proc, "holds files parity-gate did not write (mine.txt)")
    assert _snapshot(proj) == before


def test_outputs__a_second_run_into_the_same_out_is_refused_without_force(proj):
    assert run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj).returncode == 0
    verdict = (proj / "res" / "verdict.json").read_bytes()
    proc = run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj)
    _assert_refused(proc, "exists and is not empty")
    assert (proj / "res" / "verdict.json").read_bytes() == verdict


def test_outputs__a_held_lock_refuses_a_concurrent_writer_in_one_line(proj):
    lock = proj / ".res.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj)
        _assert_refused(proc, "is being written by another parity-gate run")
        assert not (proj / "res").exists()
    finally:
        os.close(fd)
    assert run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj).returncode == 0
    assert not lock.exists(), "the lock file is removed on release"


@pytest.mark.parametrize("setup, what", [
    (lambda p: (p / "real").mkdir() or os.symlink(p / "real", p / "res"), "is a symbolic link"),
    (lambda p: os.symlink(p / "nowhere", p / "res"), "is a symbolic link"),
    (lambda p: (p / "afile").write_text("x"), "is not a folder"),
])
def test_outputs__symlinks_and_file_parents_are_bad_input(proj, setup, what):
    setup(proj)
    out = "afile/res" if "folder" in what else "res"
    before = _snapshot(proj)
    proc = run_cli("compare", "golden", "unchanged", "--out", out, "--force", cwd=proj)
    _assert_refused(proc, what)
    assert _snapshot(proj) == before


def test_outputs__stale_partials_of_a_killed_run_are_swept_by_the_next_run(proj):
    stale = proj / ".res.abcdefgh.partial"
    stale.mkdir()
    (stale / MARKER).write_text("")
    (stale / "verdict.json").write_text("{}")
    foreign = proj / ".res.zzzzzzzz.partial"  # no marker: not ours, left alone
    foreign.mkdir()
    assert run_cli("compare", "golden", "unchanged", "--out", "res", cwd=proj).returncode == 0
    assert not stale.exists()
    assert foreign.exists()


def test_outputs__commit_refuses_when_something_else_wrote_the_out_meanwhile(tmp_path):
    stage = StagedDir(tmp_path / "res")
    (stage.dir / "verdict.json").write_text("{}")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "theirs.txt").write_text("written meanwhile")
    with pytest.raises(InfraError, match="was written by something else while this run ran") as exc:
        stage.commit()
    kept = Path(str(exc.value.what).rsplit("kept in ", 1)[1])
    assert (kept / "verdict.json").is_file(), "this run's output is kept, not thrown away"
    assert (tmp_path / "res" / "theirs.txt").read_text() == "written meanwhile"
    stage.discard()
    assert kept.exists()


def test_outputs__traces_survive_a_failure_after_the_engine(tmp_path):
    """What `check` does when anything after the engine fails: the staged
    traces are put in place with error.json, never thrown away."""
    stage = Stage(tmp_path / "res")
    write_trace(stage.dir, [record()])
    stage.keep_traces(RuntimeError("boom in the comparison"), "compare")
    out = tmp_path / "res"
    assert (out / "traces.jsonl").is_file()
    err = json.loads((out / "error.json").read_text())
    assert err["stage"] == "compare" and "RuntimeError: boom" in err["error"] and err["exit_code"] == 3


def test_outputs__bad_input_after_staging_leaves_nothing(tmp_path):
    with pytest.raises(BadInput, match="is also an input"):
        StagedDir(tmp_path / "g", inputs=[tmp_path / "g"])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_mount(tmp_path):
    """A tmpfs of a few KiB (disk full) or read-only; needs root, as CI runs."""
    mounted = []

    def make(opts: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        rc = os.system(f"mount -t tmpfs -o {opts} tmpfs {point} 2>/dev/null")
        if rc != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point
    yield make
    for point in mounted:
        os.system(f"umount {point}")


@pytest.mark.parametrize("opts, what", [("size=12k", "disk full"), ("ro,size=1m", "read-only")])
def test_outputs__full_or_read_only_out_is_one_bad_input_line_and_leaves_nothing(proj, small_mount, opts, what):
    point = small_mount(opts)
    before = _snapshot(proj)
    proc = run_cli("compare", "golden", "unchanged", "--out", point / "res", cwd=proj)
    line = _assert_refused(proc, "cannot write --out", "disk full / read-only")
    assert "internal error" not in line
    assert list(point.iterdir()) == []
    assert _snapshot(proj) == before


def test_outputs__sigterm_mid_compare_leaves_no_partial_and_says_so(tmp_path):
    """A runner's cancel sends SIGTERM: the staged folder goes, the line says
    why, exit 3; --out is never half-written."""
    import signal
    import subprocess
    import sys
    import time

    recs = [record(prompt_id=f"p{i:05d}", completion=tuple(range(4, 204)), sampler=[-0.5] * 200,
                   forced=[None] + [-1.0] * 202) for i in range(1500)]
    write_trace(tmp_path / "a", recs)
    write_trace(tmp_path / "b", recs)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "gate", "compare", "a", "b", "--out", "res"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".res.*.partial")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the comparison ended before it could be interrupted: grow the traces"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert err.strip().splitlines() == ["parity-gate: interrupted (SIGTERM)"]
    assert not (tmp_path / "res").exists()
    assert not list(tmp_path.glob(".res*")), "no partial folder and no lock file left behind"
