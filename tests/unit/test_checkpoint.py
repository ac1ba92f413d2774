"""The checkpoint of a run (gate/run/checkpoint.py) and the replay into it
(gate/replay.run_calls), with a scripted engine: what is saved, what a
resume skips, and what is never resumed."""
from __future__ import annotations

import io
import json

import pytest

from gate.core.errors import BadInput
from gate.core.trace import Scores
from gate.run.checkpoint import Checkpoint, checkpoint_folder, run_identity
from gate.run.engine import Generation
from gate.run.progress import Progress
from gate.run.replay import build_records, plan, run_calls

PROMPTS = {"a": [1, 2], "b": [3], "c": [4, 5, 6]}
SAMPLING = {"greedy": {"n": 1, "seed": 0, "logprobs": 1}, "hot": {"n": 2, "seed": 7, "logprobs": 1}}


class _Engine:
    """Deterministic outputs from the request alone; counts its calls."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_at = fail_at

    def _tick(self, kind: str, n: int) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append((kind, n))

    def generate(self, reqs):
        self._tick("generate", len(reqs))
        out = []
        for r in reqs:
            ids = [(sum(r.prompt_token_ids) + r.params["seed"] + j) % 50 for j in range(3)]
            out.append(Generation(key=r.key, token_ids=ids, finish_reason="length",
                                  sampler=Scores(path="decode", logprobs=[-0.1 * (j + 1) / 3 for j in range(3)],
                                                 top_ids=[[i] for i in ids], top_logprobs=[[-0.5]] * 3)))
        return out

    def score(self, seqs, k):
        self._tick("score", len(seqs))
        return [Scores(path="prefill", logprobs=[None] + [-1 / (i + 2) for i in range(len(p) + len(c) - 1)])
                for p, c in seqs]

    def decode_tokens(self, ids):
        return [f"<{i}>" for i in ids]


def _calls():
    return plan(PROMPTS, SAMPLING, ["greedy", "hot"], call_size=2)


def _run(tmp_path, engine, resume=True):
    cp = Checkpoint(tmp_path / "out", run_identity(x=1), _calls(), resume=resume)
    run_calls(engine, _calls(), PROMPTS, SAMPLING, None, cp)
    return cp


def _lines(cp):
    return [json.dumps(r.to_json()) for r in build_records(_Engine(), cp.fragments(), PROMPTS, SAMPLING)]


def test_checkpoint__an_interrupted_run_resumes_with_the_same_records_and_no_call_twice(tmp_path):
    whole = _lines(_run(tmp_path / "whole", _Engine()))
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, _Engine(fail_at=3))
    cp = Checkpoint(tmp_path / "out", run_identity(x=1), _calls())
    assert cp.resumed == 3 and cp.done_count == 3
    again = _Engine()
    run_calls(again, _calls(), PROMPTS, SAMPLING, None, cp)
    assert len(again.calls) == len(_calls()) - 3
    assert _lines(cp) == whole
    assert [tuple(json.loads(x)[k] for k in ("config", "prompt_id", "sample")) for x in whole] == \
        sorted(tuple(json.loads(x)[k] for k in ("config", "prompt_id", "sample")) for x in whole)


def test_checkpoint__another_run_or_no_resume_starts_over(tmp_path):
    _run(tmp_path, _Engine())
    assert Checkpoint(tmp_path / "out", run_identity(x=2), _calls()).resumed == 0  # other identity
    _run(tmp_path, _Engine())
    assert Checkpoint(tmp_path / "out", run_identity(x=1), _calls(), resume=False).done_count == 0
    _run(tmp_path, _Engine())
    other_plan = plan(PROMPTS, SAMPLING, ["greedy", "hot"], call_size=3)
    assert Checkpoint(tmp_path / "out", run_identity(x=1), other_plan).done_count == 0


def test_checkpoint__refuses_a_folder_it_did_not_write(tmp_path):
    folder = checkpoint_folder(tmp_path / "out")
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"--out .*out: its checkpoint path \.out\.run exists and was not written "
                                       r"by parity-gate"):
        Checkpoint(tmp_path / "out", run_identity(x=1), _calls())
    assert (folder / "notes.txt").read_text() == "mine"


def test_checkpoint__a_call_file_is_whole_or_absent(tmp_path):
    cp = Checkpoint(tmp_path / "out", run_identity(x=1), _calls())
    with pytest.raises(TypeError):
        cp.save(0, [{"key": ["greedy", "a", 0], "gen": object()}])
    assert not cp.done(0) and not [p for p in (cp.folder / "calls").iterdir()]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress__a_terminal_line_rewritten_in_place_and_ci_lines_rate_limited():
    tty = _Stream(True)
    p = Progress(quiet=False, interval=30, stream=tty)
    for done in (1, 2, 3, 4):
        p(done, 4, 2, 100, 0.5)
    assert tty.getvalue().count("\r\033[K") == 4 and tty.getvalue().endswith("done\n")
    assert "engine calls 2/4 (50%), 200 tokens/s, about 1s left" in tty.getvalue()
    ci = _Stream(False)
    p = Progress(quiet=False, interval=3600, stream=ci)
    for done in (1, 2, 3, 4):
        p(done, 4, 2, 100, 0.5)
    assert ci.getvalue().splitlines() == ["parity-gate: engine calls 1/4 (25%), 200 tokens/s, about 2s left",
                                          "parity-gate: engine calls 4/4 (100%), 200 tokens/s, done"]
    quiet = _Stream(True)
    p = Progress(quiet=True, interval=0, stream=quiet)
    p(1, 1, 1, 1, 1.0)
    assert quiet.getvalue() == ""
