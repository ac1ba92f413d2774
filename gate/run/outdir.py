"""The --out folder of record, check and merge: staged beside --out and
renamed into place (core/fsutil.StagedDir), error.json and the traces kept
after an infrastructure failure, a full disk said in one line, the resume
hint of a run with saved engine calls, and the records written in one pass
with the header last."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gate.core.errors import GateError, InfraError
from gate.core.fsutil import MARKER, StagedDir, atomic_write_text, disk_error
from gate.core.semantics import Relation, add_relation
from gate.core.trace import Manifest, Record, TraceWriter
from gate.run.checkpoint import Checkpoint
from gate.run.suite import Suite

__all__ = ["Stage", "writing", "suite_inputs", "resumable", "failed_run", "write_records", "ERROR_FILE"]

log = logging.getLogger(__name__)
ERROR_FILE = "error.json"


class Stage(StagedDir):
    """--out is staged, then renamed into place (gate/_fsutil.StagedDir knows
    what it may replace); an infrastructure failure keeps what was written,
    plus error.json."""

    def save_error(self, exc: GateError, stage: str) -> None:
        """Keep what was written, plus error.json, and put it in place."""
        atomic_write_text(self.dir / ERROR_FILE, json.dumps(
            {"error": exc.what, "hint": exc.hint, "kind": exc.kind, "stage": stage, "exit_code": exc.exit_code},
            indent=1) + "\n")
        self.commit()

    def keep_traces(self, exc: BaseException, stage: str) -> None:
        """The engine's traces are already in the stage: whatever fails after
        them must not lose them. Best effort: the original error wins."""
        err = exc if isinstance(exc, GateError) else InfraError(
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}",
            "the traces of the engine run are saved; re-run 'parity-gate compare' on them")
        try:
            self.save_error(err, stage)
        except Exception:  # noqa: BLE001 - never mask the error that brought us here
            log.warning("could not save the traces after a failure", exc_info=True)
            self.discard()


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """OSError from a full disk or a read-only mount -> one bad-input line."""
    try:
        yield
    except OSError as exc:
        err = disk_error(exc, f"--out {out}")
        if err is None:
            raise
        raise err from None


def suite_inputs(suite: Suite) -> list[Path]:
    """What a run reads: --out may be none of these, contain none, lie in none."""
    return [suite.path, suite.model]


def resumable(exc: BaseException, checkpoint: Checkpoint | None) -> None:
    """Say, in the error's one line, that the finished engine calls are kept.
    A checkpoint that holds none goes, and so does one that a deterministic
    failure (`resumable` False: the same command fails the same way) makes
    useless: nothing is left to resume, and nothing says to."""
    if checkpoint is None:
        return
    if not checkpoint.done_count or not getattr(exc, "resumable", True):
        checkpoint.remove()
        return
    saved = f"{checkpoint.describe()}: run the same command again to resume"
    if isinstance(exc, KeyboardInterrupt):
        exc.resume = saved  # type: ignore[attr-defined]  # gate/cli.py prints it
    elif isinstance(exc, GateError):
        exc.hint = f"{exc.hint}; {saved}" if exc.hint else saved


def failed_run(out: Path) -> bool:
    """--out holds what a failed run of parity-gate left (its error.json): the
    same command may replace it (gate/_fsutil.StagedDir still refuses any
    file it did not write)."""
    return not out.is_symlink() and (out / ERROR_FILE).is_file() and (out / MARKER).is_file()


def write_records(stage: Stage, records: Iterable[Record],
                   manifest_of: Callable[[dict[str, Relation]], Manifest]) -> tuple[Manifest, int]:
    """Records into the staged traces.jsonl, in key order, in one pass; the
    header, whose sampler relation needs every record, comes last."""
    relations: dict[str, Relation] = {}
    made: list[Manifest] = []

    def header() -> Manifest:
        made.append(manifest_of(relations))
        return made[0]

    with TraceWriter(stage.dir, header) as writer:
        for rec in records:
            writer.write(add_relation(relations, rec))
    return made[0], writer.count
