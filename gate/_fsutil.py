"""Atomic file writes: a reader never sees half a file, a crash leaves none."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temp file beside `path`, fsync, then rename over it.

    On any exception the temp file is removed and `path` is untouched."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for folder in made:  # folders this write created go too: a failed write leaves nothing
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


class StagedDir:
    """A folder written in full beside `out`, then renamed over it in one step.

    `discard()` removes it and any parent folders it had to create, so a run
    that fails leaves nothing behind."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._made = [p for p in self.out.parents if not p.exists()]  # deepest first
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))

    def commit(self) -> None:
        if self.out.exists():
            shutil.rmtree(self.out)
        self.dir.chmod(0o755)
        self.dir.rename(self.out)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for parent in self._made:  # stop at one that is no longer empty
            try:
                parent.rmdir()
            except OSError:
                break
