"""Long runs on the real CPU engine: resume after a kill, shards and their
merge, progress output. Resume has a golden of its own (one request per
call); the shards' uninterrupted baseline is the cycle's last `check`:
processed logprobs against the golden re-recorded with them
(tests/integration/conftest.py), so every shard run passes the same engine arg."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import gate

pytestmark = pytest.mark.engine
PROCESSED = ("--engine-arg", "logprobs_mode=processed_logprobs")  # what the cycle's golden ends up recorded with


def _calls(trace: Path) -> list[dict]:
    with open(trace / "traces.jsonl", encoding="utf-8") as fh:
        return json.loads(fh.readline())["manifest"]["batch_plan"]["calls"]


def _start(*args: str | Path) -> tuple[subprocess.Popen, Path]:
    log = Path(str(args[list(args).index("--out") + 1]) + ".log")
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", PYTHONWARNINGS="ignore")
    fh = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "gate", *map(str, args)], stdout=fh, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    fh.close()
    return proc, log


def _kill_after(proc: subprocess.Popen, log: Path, calls_done: int, sig: int, timeout: float = 300) -> str:
    """Send `sig` once the run reports `calls_done` finished engine calls."""
    deadline = time.monotonic() + timeout
    needle = f"engine calls {calls_done}/"
    while needle not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"the run ended before call {calls_done}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no progress line in time"
        time.sleep(0.01)
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    if sig == signal.SIGKILL:  # the engine's own processes are orphaned by SIGKILL: end them like a runner would
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return log.read_text(errors="replace")


@pytest.fixture(scope="module")
def resumed(suite, tmp_path_factory) -> dict:
    """check killed with SIGKILL, resumed and killed with SIGTERM, resumed to
    the end; the kill points are random (the seed is in the test output).
    The golden is recorded with one request per call (27 calls in check), so
    there is room for both kills between the first call and the last."""
    root = tmp_path_factory.mktemp("resume")
    golden = root / "golden"
    rec = gate("record", "--suite", suite, "--out", golden, "--call-size", "1", "--quiet")
    assert rec.rc == 0, rec.stderr[-3000:]
    args = ("check", "--suite", suite, "--golden", golden, "--progress-interval", "0")
    base = gate(*args, "--out", root / "base")
    assert base.rc == 0, base.stderr[-3000:]
    total = len(_calls(golden)) + sum(c["kind"] == "free" for c in _calls(golden))  # + check's own-token calls
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    first = rng.randrange(2, 8)
    out = root / "result"
    args = (*args, "--out", out)
    proc, log = _start(*args)
    killed = _kill_after(proc, log, first, signal.SIGKILL)
    saved = sorted(p.name for p in (root / ".result.run" / "calls").iterdir())
    # SIGKILL lands a moment after the progress line: a call or two more may be saved
    assert len(saved) + 10 < total, f"seed {seed}: SIGKILL after call {first} came after call {len(saved)}"
    second = rng.randrange(len(saved) + 1, total - 10)
    proc, log = _start(*args)
    termed = _kill_after(proc, log, second, signal.SIGTERM)
    after_term = {"rc": proc.returncode, "out_exists": out.exists(),
                  "out_files": sorted(p.name for p in out.iterdir()) if out.is_dir() else [],
                  "saved": sorted(p.name for p in (root / ".result.run" / "calls").iterdir()),
                  "partials": sorted(p.name for p in root.glob(".result.*.partial"))}
    final = gate(*args)
    return {"seed": seed, "first": first, "second": second, "total": total, "killed": killed, "saved": saved,
            "termed": termed, "after_term": after_term, "final": final, "out": out, "root": root,
            "baseline": root / "base"}


def test_resume__sigkill_then_sigterm_then_resume_gives_the_uninterrupted_bytes(resumed):
    r = resumed
    note = f"(random seed {r['seed']}: killed after calls {r['first']} and {r['second']} of {r['total']})"
    assert len(r["saved"]) >= r["first"], note  # every finished call was on disk when SIGKILL came
    assert r["final"].rc == 0, r["final"].stderr[-3000:]
    assert (r["out"] / "traces.jsonl").read_bytes() == (r["baseline"] / "traces.jsonl").read_bytes(), note
    final = json.loads((r["out"] / "verdict.json").read_text())
    base = json.loads((r["baseline"] / "verdict.json").read_text())
    assert final["measures"] == base["measures"] and final["verdict"] == base["verdict"] == "pass", note
    assert not (r["root"] / ".result.run").exists(), "the checkpoint is removed once the result is in place"
    saved = len(r["after_term"]["saved"])
    assert f"resuming: {saved} of {r['total']} engine calls were done by an earlier run" \
        in r["final"].stderr, r["final"].stderr[-2000:]


def test_resume__sigterm_leaves_a_consistent_partial_run_and_says_how_to_resume(resumed):
    r, after = resumed, resumed["after_term"]
    saved = len(after["saved"])
    assert after["rc"] == 3 and saved >= r["second"] and not after["partials"]
    last = [line for line in r["termed"].splitlines() if line.strip()][-1]
    if saved < r["total"]:  # stopped in its engine calls: no --out, and the line says what is saved
        assert not after["out_exists"]
        assert last == (f"parity-gate: interrupted (SIGTERM); {saved} of {r['total']} engine calls are saved in "
                        f".result.run: run the same command again to resume"), last
    else:  # the signal came after the last call: the traces are kept in --out with error.json
        assert last == "parity-gate: interrupted (SIGTERM)", last
        assert {"traces.jsonl", "error.json"} <= set(after["out_files"])
    # one line per finished call without a terminal (--progress-interval 0)
    assert "engine calls 1/" in r["killed"] and "tokens/s" in r["killed"]


@pytest.fixture(scope="module")
def sharded(suite, cycle, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shards")
    golden = cycle["golden"].out
    runs = {i: gate("check", "--suite", suite, "--golden", golden, "--out", root / f"s{i}", "--shard", f"{i}/2",
                    "--quiet", *PROCESSED) for i in (1, 2)}
    merged = gate("merge", root / "s1", root / "s2", "--suite", suite, "--golden", golden, "--out", root / "merged")
    return {"runs": runs, "merged": merged, "root": root, "golden": golden, "baseline": cycle["after_update"].out}


def test_shards__merge_equals_the_unsharded_check(sharded):
    for i, run in sharded["runs"].items():
        assert run.rc == 0, run.stderr[-3000:]
        assert "engine calls" not in run.stderr  # --quiet
    m = sharded["merged"]
    assert m.rc == 0, m.stderr[-3000:]
    root, base = sharded["root"], sharded["baseline"]
    merged_lines = (root / "merged" / "traces.jsonl").read_text().splitlines()
    base_lines = (base / "traces.jsonl").read_text().splitlines()
    assert merged_lines[1:] == base_lines[1:]  # every record, byte for byte
    mv = json.loads((root / "merged" / "verdict.json").read_text())
    bv = json.loads((base / "verdict.json").read_text())
    assert mv["measures"] == bv["measures"] and mv["verdict"] == bv["verdict"]
    assert [(c["id"], c["config"], c["value"], c["evidence"]) for c in mv["checks"]] == \
        [(c["id"], c["config"], c["value"], c["evidence"]) for c in bv["checks"]]
    # each shard ran whole calls of the golden's plan (here: one config each); together, every record once
    seen = [tuple(json.loads(line)[k] for k in ("config", "prompt_id", "sample")) for i in (1, 2)
            for line in (root / f"s{i}" / "traces.jsonl").read_text().splitlines()[1:] if '"prompt_id"' in line]
    assert len(seen) == len(set(seen)) == len(base_lines) - 2
    assert {c for c, _, _ in seen[:1]} != {c for c, _, _ in seen[-1:]}


def test_shards__merge_refuses_a_missing_shard_and_leaves_nothing(sharded, suite):
    root = sharded["root"]
    run = gate("merge", root / "s2", "--suite", suite, "--golden", sharded["golden"], "--out", root / "half")
    assert run.rc == 2
    assert run.stderr.strip() == ("parity-gate: bad input: shard 1/2 missing (1 of 2 given) (hint: wait for every "
                                  "shard's job, and pass all N result folders)")
    assert not (root / "half").exists()


@pytest.mark.slow
def test_record__shards_merge_into_the_unsharded_golden(suite, cycle, tmp_path):
    for i in (1, 2):
        run = gate("record", "--suite", suite, "--out", tmp_path / f"g{i}", "--shard", f"{i}/2", "--quiet", *PROCESSED)
        assert run.rc == 0, run.stderr[-3000:]
        assert f"(shard {i}/2)" in run.stdout
    m = gate("merge", tmp_path / "g1", tmp_path / "g2", "--suite", suite, "--out", tmp_path / "golden")
    assert m.rc == 0, m.stderr[-3000:]
    whole = cycle["golden"].out
    merged = json.loads((tmp_path / "golden" / "traces.jsonl").read_text().splitlines()[0])["manifest"]
    base = json.loads((whole / "traces.jsonl").read_text().splitlines()[0])["manifest"]
    assert merged["suite"]["workload_sha256"] == base["suite"]["workload_sha256"]
    assert merged["suite"]["prompts"] == base["suite"]["prompts"]
    assert (tmp_path / "golden" / "traces.jsonl").read_text().splitlines()[1:] == \
        (whole / "traces.jsonl").read_text().splitlines()[1:]
    # the merged plan holds the unsharded plan's calls (shard 1's first), each exactly once
    assert sorted(map(json.dumps, merged["batch_plan"]["calls"])) == sorted(map(json.dumps, base["batch_plan"]["calls"]))
    assert merged["batch_plan"]["calls"][0]["config"] == "greedy" and merged["batch_plan"]["calls"][1]["kind"] == "score"
