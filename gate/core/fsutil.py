"""Atomic file writes, reads that refuse what is not a regular file, and
the one place that replaces an output folder.

A reader never sees half a file, and a crash leaves none. `open_regular`
opens nothing but a regular file, so no FIFO or device given as an input or
output can hang or flood a run. `StagedDir` is the only code that deletes or
replaces a folder: it knows what it may touch (a folder parity-gate wrote
itself, never an input, never the current, home or workspace folder), holds
a lock against a second writer, and checks again at the final rename that
nothing appeared meanwhile."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from gate.core.errors import BadInput, InfraError

MARKER = ".parity-gate"  # written into every folder parity-gate stages: "this one is ours"
# What a result or golden folder may hold (check, compare, report, diagnose, action).
RESULT_FILES = frozenset({MARKER, "traces.jsonl", "verdict.json", "comment.md", "report.html", "summary.md",
                          "error.json", "github.json", "diagnosis"})
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


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


def disk_error(exc: OSError, what: str) -> BadInput | None:
    """A full disk, a read-only mount or a denied write is the user's to fix:
    one bad-input line. Anything else stays an OSError."""
    if exc.errno not in _DISK_ERRNOS:
        return None
    return BadInput(f"cannot write {what}: {exc.strerror} (disk full / read-only / no permission)",
                    "free space, or choose a writable folder for --out")


class NotRegularFile(Exception):
    """A FIFO, device or socket where a file was expected (a folder raises
    IsADirectoryError, as open() would). The message follows the path:
    "is a FIFO (named pipe), not a regular file"; `kind` is the noun alone."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"is {kind}, not a regular file")
        self.kind = kind


class TooLarge(Exception):
    """A file over its size limit. The message follows the path:
    "is 5,000,000 bytes, over the 4 MiB limit"."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def describe_file_kind(mode: int) -> str | None:
    """None for a regular file; otherwise what it is, worded for a message
    ("a folder", "a FIFO (named pipe)", "a character device", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_regular(st: os.stat_result, path: Path, limit: int | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    kind = describe_file_kind(st.st_mode)
    if kind:
        raise NotRegularFile(kind)
    if limit is not None and st.st_size > limit:
        raise TooLarge(f"is {st.st_size:,} bytes, over the {limit / 2**20:g} MiB limit")


def open_regular(path: Path, limit: int | None = None, *, append: bool = False) -> IO[bytes]:
    """Open a regular file for reading (at most `limit` bytes), or for
    appending unbuffered (`append`: a missing file is created).

    Anything else is refused before it could block: a FIFO waits forever for
    its other end and a device never ends. The path's stat is checked before
    any open, the open itself never blocks (O_NONBLOCK), and fstat checks
    again what was opened, in case the path was swapped in between.
    Raises NotRegularFile, TooLarge, IsADirectoryError for a folder, and
    whatever os.open raises (FileNotFoundError, PermissionError, ValueError
    for a NUL in the path): each caller words its own message."""
    try:
        _check_regular(os.stat(path), path, limit)
    except FileNotFoundError:
        if not append:
            raise
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT if append else os.O_RDONLY
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    try:
        _check_regular(os.fstat(fd), path, limit)
        return os.fdopen(fd, "ab", buffering=0) if append else os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_regular).
    At most limit + 1 bytes are read: a file that grew past its stat is
    refused too."""
    with open_regular(path, limit) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"is over the {limit / 2**20:g} MiB limit")
    return data


def workspace_root() -> Path:
    """The folder --strict-paths confines inputs to: GITHUB_WORKSPACE on a
    runner, else the current folder."""
    return Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()


def outside(path: Path, root: Path) -> Path | None:
    """Where `path` really is (symlinks followed) when that is outside `root`;
    None when it is inside."""
    real = Path(path).resolve()
    return None if real == root or root in real.parents else real


def _protected() -> list[tuple[Path, str]]:
    out = [(Path.cwd().resolve(), "the current folder"), (Path.home().resolve(), "the home folder"),
           (Path("/"), "the file-system root")]
    ws = os.environ.get("GITHUB_WORKSPACE")
    if ws:
        out.append((Path(ws).resolve(), "the workspace root (GITHUB_WORKSPACE)"))
    return out


def _foreign(folder: Path, names: frozenset[str]) -> list[str]:
    """Entries of `folder` that parity-gate did not write (empty: all ours).
    Leftover temp files of an interrupted atomic write are ours too."""
    return sorted(e.name for e in os.scandir(folder)
                  if e.name not in names and not (e.name.startswith(".") and e.name.endswith(".tmp")))


class StagedDir:
    """A folder written in full beside `out`, then renamed over it in one step.

    At construction, before anything runs, `out` is checked: it is not an
    input (`inputs`) nor contains one nor lies inside one, it is not the
    current, home or workspace folder nor one of their parents, it is not a
    symlink, and it is absent, empty, or (with `force`) a folder that holds
    only files parity-gate writes (`owned`). A lock beside it refuses a
    second writer. `commit()` checks again and renames; `discard()` removes
    the staged folder and any parent folders it had to create, so a run that
    fails leaves nothing behind."""

    def __init__(self, out: Path, *, force: bool = False, inputs: Iterable[Path] = (),
                 owned: frozenset[str] = RESULT_FILES, what: str = "--out", replace: bool = False) -> None:
        self.out = Path(out)
        self.what = what
        self._owned = owned | {MARKER}
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None
        self.dir: Path | None = None  # type: ignore[assignment]
        self._check_target(inputs)
        self._made = [p for p in self.out.parents if not p.exists()]  # deepest first
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._sweep()
            self._start_state = self._state(force or replace)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
            (self.dir / MARKER).write_text("parity-gate output folder\n", encoding="utf-8")
        except OSError as exc:
            self.discard()
            raise disk_error(exc, f"{what} {self.out}") or exc
        except BaseException:
            self.discard()
            raise

    # ---- checks before anything runs
    def _check_target(self, inputs: Iterable[Path]) -> None:
        out, what = self.out, self.what
        if str(out) in ("", ".") or not out.name or out.name in (".", ".."):
            raise BadInput(f"{what} {str(out)!r} names the current folder or a parent of it",
                           "name a new sub-folder, e.g. --out parity-result (an empty value is often an "
                           "unset CI variable)")
        if out.is_symlink():
            raise BadInput(f"{what} {out} is a symbolic link", "pass the real folder path, not a link to it")
        for parent in out.parents:
            if parent.exists() and not parent.is_dir():
                raise BadInput(f"{what} {out}: {parent} is not a folder", "choose a path whose parents are folders")
        if out.exists() and not out.is_dir():
            raise BadInput(f"{what} {out} exists and is not a folder", "choose a folder path")
        real = out.resolve()
        for folder, name in _protected():
            if real == folder or real in folder.parents:
                raise BadInput(f"{what} {out} is {name}" if real == folder else f"{what} {out} contains {name}",
                               "name a new sub-folder for the results, e.g. --out parity-result")
        for item in inputs:
            if item is None:
                continue
            src = Path(item).resolve()
            if src == real:
                raise BadInput(f"{what} {out} is also an input", "write the results to another folder")
            if real in src.parents:
                raise BadInput(f"{what} {out} contains the input {item}", "write the results to another folder")
            if src in real.parents:
                raise BadInput(f"{what} {out} lies inside the input {item}", "write the results to another folder")

    def _state(self, force: bool) -> str:
        """'absent', 'empty' or 'ours' (replaceable); refuses anything else."""
        if not self.out.exists():
            return "absent"
        if not any(self.out.iterdir()):
            return "empty"
        if not force:
            raise BadInput(f"{self.what} {self.out} exists and is not empty", "choose an empty folder or pass --force")
        foreign = _foreign(self.out, self._owned)
        if foreign:
            raise BadInput(f"{self.what} {self.out} holds files parity-gate did not write ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}); --force replaces only parity-gate's own folders",
                           "choose another folder, or move those files away")
        return "ours"

    # ---- one writer at a time
    def _lock(self) -> None:
        path = self.out.parent / f".{self.out.name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BadInput(f"{self.what} {self.out} is being written by another parity-gate run",
                               "wait for it to finish, or choose another folder") from None
            try:  # the holder before us may have unlinked it on release: lock the file that is there
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd, self._lock_path = fd, path
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)  # type: ignore[arg-type]
            os.close(self._lock_fd)
            self._lock_fd = None

    def _sweep(self) -> None:
        """Staged folders of earlier runs into the same --out that were killed
        before they could clean up. Under the lock no other run owns one."""
        pattern = re.compile(r"\." + re.escape(self.out.name) + r"\.[a-z0-9_]{8}\.(partial|old)")
        for entry in os.scandir(self.out.parent):
            if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False) \
                    and os.path.exists(os.path.join(entry.path, MARKER)):
                shutil.rmtree(entry.path, ignore_errors=True)

    # ---- the final step
    def commit(self) -> None:
        assert self.dir is not None
        try:
            self._replace()
        except OSError as exc:
            raise disk_error(exc, f"{self.what} {self.out}") or exc
        finally:
            self._unlock()

    def _replace(self) -> None:
        if self.out.is_symlink() or (self.out.exists() and not self.out.is_dir()):
            now = "foreign"
        elif not self.out.exists() or not any(self.out.iterdir()):
            now = "empty"
        else:
            now = "ours" if self._start_state == "ours" and not _foreign(self.out, self._owned) else "foreign"
        if now == "foreign":
            kept, self.dir = self.dir, None  # not ours to replace, and not ours to throw away
            raise InfraError(f"{self.what} {self.out} was written by something else while this run ran; "
                             f"this run's output is kept in {kept}",
                             "move it before the next run into that folder; runs into one --out must not overlap")
        self.dir.chmod(0o755)
        if now == "ours":
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            os.rename(self.out, old / "x")
            (old / MARKER).write_text("", encoding="utf-8")
            os.rename(self.dir, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:  # absent, or an empty folder: rename(2) replaces an empty folder in one step
            os.rename(self.dir, self.out)
        self.dir = None

    def discard(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._unlock()
        for parent in self._made if hasattr(self, "_made") else ():  # stop at one that is no longer empty
            try:
                parent.rmdir()
            except OSError:
                break


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes, read in 1 MiB blocks (a golden's
    traces, a suite: what a shard says it ran against)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def templates_root() -> Any:
    """The report templates: the installed package `gate.templates` (the wheel maps the top-level templates/
    there), else, for a source checkout on PYTHONPATH (a GPU host without pip), the checkout's templates/."""
    import importlib.resources

    try:
        return importlib.resources.files("gate.templates")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "templates"
        if (checkout / "comment.md.j2").is_file():
            return checkout
    raise InfraError("the report templates (package gate.templates) are not installed",
                     "install parity-gate (pip install . or pip install -e .), or run from a source checkout")
