"""A run's engine work on disk, one file per finished batch-plan call.

`record` and `check` write each call's outputs here as soon as the call
returns, so the gate holds one call's outputs at a time however long the
suite is (memory comes from the engine, not from the gate), and a run that
is killed (a runner's cancel, SIGKILL, a lost machine) resumes: running the
same command again skips the calls already on disk. The trace is assembled
from these files at the end, in key order, so a resumed run writes the same
bytes as one that was never interrupted.

The folder is `.<out name>.run` beside `--out`, written only while the run
holds `--out`'s lock (gate/_fsutil.StagedDir). `run.json` names the run: a
checkpoint of another command, suite, golden, model, engine args, call size
or shard is never resumed; it is removed and the run starts over.

One call's file holds one JSON line per request, sorted by key:
  {"key": [config, prompt_id, sample], "gen": {...}}     a free-run call
  {"key": [...], "forced": SCORES}                       a scoring call
  {"key": [...], "own": SCORES}                          check's own-token call
Floats are written with repr precision, so they read back bit for bit."""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

from gate import __version__
from gate.core.errors import BadInput
from gate.core.fsutil import MARKER, atomic_write_text
from gate.core.rows import BatchCall
from gate.core.trace import Scores

__all__ = ["Checkpoint", "checkpoint_folder", "check_checkpoint_folder", "run_identity",
           "scores_to_json", "scores_from_json"]

log = logging.getLogger(__name__)
FORMAT = "parity-gate-checkpoint"
VERSION = 1
RUN_FILE = "run.json"
CALLS = "calls"


def run_identity(**parts: Any) -> str:
    """A stable hash of everything that decides a run's engine work."""
    blob = json.dumps(dict(parts, tool=__version__, format=VERSION), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def scores_to_json(s: Scores | None) -> dict[str, Any] | None:
    return None if s is None else s.to_json()


def scores_from_json(d: dict[str, Any] | None) -> Scores | None:
    if d is None:
        return None
    return Scores(path=d["path"], logprobs=d["logprobs"], top_ids=d.get("top_ids"),
                  top_logprobs=d.get("top_logprobs"), completion_token_ids=d.get("completion_token_ids"))


class Checkpoint:
    """The calls a run has finished, on disk (see the module doc)."""

    def __init__(self, out: Path, identity: str, calls: list[BatchCall], resume: bool = True) -> None:
        self.folder = checkpoint_folder(out)
        self.identity = identity
        self.calls = calls
        self.resumed = 0
        check_checkpoint_folder(out)
        if self.folder.is_dir():
            if resume and self._matches():
                self.resumed = self.done_count  # the command says so, on stderr
                return
            if resume:
                log.warning("discarding the checkpoint of a different run into the same --out (%s)", self.folder)
            shutil.rmtree(self.folder)
        (self.folder / CALLS).mkdir(parents=True)
        (self.folder / MARKER).write_text("parity-gate checkpoint\n", encoding="utf-8")
        atomic_write_text(self.folder / RUN_FILE, json.dumps(
            {"format": FORMAT, "version": VERSION, "identity": identity, "calls": calls}) + "\n")

    def _matches(self) -> bool:
        try:
            run = json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (isinstance(run, dict) and run.get("format") == FORMAT and run.get("version") == VERSION
                and run.get("identity") == self.identity and run.get("calls") == self.calls)

    # ---- one file per call
    def _path(self, i: int) -> Path:
        return self.folder / CALLS / f"{i:06d}.jsonl"

    def done(self, i: int) -> bool:
        return self._path(i).is_file()

    @property
    def done_count(self) -> int:
        return sum(1 for i in range(len(self.calls)) if self.done(i))

    def save(self, i: int, fragments: list[dict[str, Any]]) -> None:
        """Call `i`'s outputs, atomically: the file is whole or absent."""
        fragments = sorted(fragments, key=lambda f: f["key"])
        atomic_write_text(self._path(i), "".join(json.dumps(f, separators=(",", ":")) + "\n" for f in fragments))

    def read(self, i: int) -> Iterator[dict[str, Any]]:
        with open(self._path(i), encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def completions(self, i: int) -> dict[tuple, list[int]]:
        """The generated token ids of free-run call `i`."""
        return {tuple(f["key"]): f["gen"]["completion_token_ids"] for f in self.read(i)}

    def fragments(self) -> Iterator[tuple[tuple, dict[str, Any]]]:
        """Every call's outputs joined per key, in key order: (key, {"gen",
        "forced", "own"}). One line per call file is held at a time."""
        streams = [self._tagged(i) for i in range(len(self.calls))]
        key, joined = None, {}
        for k, _, frag in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            if k != key:
                if key is not None:
                    yield key, joined
                key, joined = k, {}
            joined.update((name, value) for name, value in frag.items() if name != "key")
        if key is not None:
            yield key, joined

    def _tagged(self, i: int) -> Iterator[tuple[tuple, int, dict[str, Any]]]:
        for f in self.read(i):
            yield tuple(f["key"]), i, f

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self) -> str:
        return f"{self.done_count} of {len(self.calls)} engine calls are saved in {self.folder.name}"


def checkpoint_folder(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.run"


def check_checkpoint_folder(out: Path) -> None:
    """Refuse a `.OUT.run` that parity-gate did not write (a file, a link, a
    folder without the marker): it is never resumed, and never removed."""
    folder = checkpoint_folder(out)
    if folder.is_symlink() or (folder.exists() and not (folder.is_dir() and (folder / MARKER).is_file())):
        raise BadInput(f"--out {out}: its checkpoint path {folder.name} exists and was not written by parity-gate",
                       "move it away: parity-gate keeps an unfinished run's engine calls there, to resume it")
