"""`parity-gate pin`: which vLLM release a project pins, found in the files
where projects pin it, without installing anything (docs/github.md,
"Finding the vLLM pin, and skipping the GPU run").

Every place that names vLLM is a *mention* (gate/github/pin_mentions.py
reads them from requirements, constraints, pyproject.toml, uv.lock,
poetry.lock and Dockerfiles); one that names a single release (`==X`, a lock
entry, an image tag) is exact. The pin is the release the exact mentions
agree on; a range elsewhere must admit it. An explicit `--vllm-version` wins
over the files.

What is not one release is refused with one line saying what and where
(file:line) and how to fix it: no mention at all, only ranges, two releases,
or a range that excludes the pinned release. The parsing is pure (a mapping
of file name to text in, mentions out); only `read_tree` and `read_rev` at
the bottom touch the disk or git. Imports: the standard library and
`packaging` only, so the command runs from `pip install --no-deps
parity-gate packaging` on a hosted runner.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from gate.core.errors import BadInput
from gate.github.pin_mentions import Mention, is_candidate, mentions, normalize_version

__all__ = ["Pin", "resolve", "bump", "fingerprint", "read_tree", "read_rev", "add_arguments", "run"]

WHERE = "requirements*.txt, constraints*.txt, pyproject.toml, uv.lock, poetry.lock or a Dockerfile"
# The shape action.yml accepts for its vllm-version input (an image tag after the v).
VERSION_SHAPE = re.compile(r"^[0-9][0-9A-Za-z._-]{0,100}$")
HINT = ("pin one release (e.g. vllm==0.32.0), commit a uv.lock, or give the version explicitly "
        "(the workflow's PARITY_GATE_VLLM, parity-gate pin --vllm-version)")
FILE_LIMIT = 32 * 1024 * 1024  # a lock file of a large project is a few MB


@dataclass(frozen=True)
class Pin:
    version: str
    source: str              # "requirements.txt:3" (the first exact mention), or "--vllm-version"
    mentions: tuple[Mention, ...] = ()


# ------------------------------------------------------------------ the pin
def _admits(mention: Mention, version: str) -> bool:
    if not mention.specifier:
        return True
    try:
        return SpecifierSet(mention.specifier).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True


def resolve(found: list[Mention], explicit: str = "", folder: str = ".") -> Pin:
    """The one release the project pins; BadInput (one line: what, where, how to fix) otherwise."""
    if explicit:
        version = normalize_version(explicit)
        if not VERSION_SHAPE.match(version):
            raise BadInput(f"--vllm-version {explicit!r} is not a vLLM release", "give one such as 0.32.0")
        return Pin(version, "--vllm-version", tuple(found))
    exact = [m for m in found if m.version is not None]
    if not found:
        raise BadInput(f"{folder}: no vLLM pin found in {WHERE}", HINT)
    if not exact:
        first = found[0]
        what = "names no release" if not first.specifier else "is a range, not one release"
        more = f" (and {len(found) - 1} more mention{'s' * (len(found) > 2)}, none exact)" if len(found) > 1 else ""
        raise BadInput(f"{first.described()} {what}: parity-gate tests one vLLM release{more}", HINT)
    versions = sorted({m.version for m in exact}, key=lambda v: (len(v), v))
    if len(versions) > 1:
        by = [next(m for m in exact if m.version == v) for v in versions]
        raise BadInput("vLLM is pinned to more than one release: " + "; ".join(m.described() for m in by),
                       "pin the same release everywhere")
    version = versions[0]
    if not VERSION_SHAPE.match(version):
        raise BadInput(f"{exact[0].described()}: {version!r} cannot name a vLLM image tag", HINT)
    excluded = [m for m in found if m.version is None and not _admits(m, version)]
    if excluded:
        raise BadInput(f"{excluded[0].described()} excludes {version}, pinned at {exact[0].described()}",
                       "make the range admit the pinned release, or pin another one")
    return Pin(version, exact[0].where, tuple(found))


def fingerprint(found: Iterable[Mention]) -> list[tuple[str, str]]:
    """What the project says about vLLM, line numbers aside: equal on both
    sides of a PR means the PR left the vLLM requirement as it was."""
    return sorted({(m.file, "".join(m.spec.split())) for m in found})


LOCKS = ("uv.lock", "poetry.lock")  # written by their tools, never by hand: re-lock them


def bump(files: Mapping[str, str], version: str) -> tuple[dict[str, str], list[str]]:
    """The texts of `files` with every exact mention of another release set
    to `version`, and one 'file:line: old -> new' note per change. Lock files
    are left to their tools (uv lock, poetry lock). BadInput when there is no
    exact mention to change, or one whose release is not written out on its
    own lines (a Dockerfile ARG two lines up: edit it by hand)."""
    version = normalize_version(version)
    if not VERSION_SHAPE.match(version):
        raise BadInput(f"--set {version!r} is not a vLLM release", "give one such as 0.32.0")
    found = mentions(files)
    exact = [m for m in found if m.version is not None]
    if not exact:
        resolve(found)  # the same one line as `pin` gives: no mention, or only ranges
    texts: dict[str, list[str]] = {}
    notes = []
    old_release = lambda v: re.compile(rf"(?<![0-9.]){re.escape(v)}(?![0-9A-Za-z.])")  # noqa: E731
    for m in exact:
        if m.version == version or m.file.rsplit("/", 1)[-1] in LOCKS:
            continue
        lines = texts.setdefault(m.file, files[m.file].splitlines(keepends=True))
        index = m.line - 1
        while True:  # the logical line: its continuation lines too
            new = old_release(m.version).sub(version, lines[index])
            if new != lines[index]:
                lines[index] = new
                notes.append(f"{m.file}:{index + 1}: {m.version} -> {version}")
                break
            if not lines[index].rstrip().endswith("\\") or index + 1 >= len(lines):
                raise BadInput(f"{m.described()}: release {m.version} is not written on that line",
                               f"set it to {version} by hand where it is defined")
            index += 1
    return {name: "".join(lines) for name, lines in texts.items()}, notes


# ------------------------------------------------------------------ reading files (the only I/O)
def read_tree(root: Path) -> dict[str, str]:
    """The candidate files under `root` (not below, except requirements/)."""
    if not root.is_dir():
        raise BadInput(f"--dir {root}: not a folder", "pass the project's folder (where requirements.txt or pyproject.toml lie)")
    files = {}
    for path in [*root.iterdir(), *(root / "requirements").glob("*.txt")]:
        name = path.relative_to(root).as_posix()
        if is_candidate(name) and path.is_file():
            if path.stat().st_size > FILE_LIMIT:
                raise BadInput(f"{name}: over {FILE_LIMIT >> 20} MiB, too large to be read for the vLLM pin",
                               "pin vLLM in a smaller file, or give the version explicitly (--vllm-version)")
            files[name] = path.read_text(encoding="utf-8", errors="replace")
    return files


def read_rev(root: Path, rev: str) -> dict[str, str] | None:
    """The candidate files of commit `rev` (git), or None when git cannot read it."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None

    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._/-]*", rev):
        return None
    listing = git("ls-tree", "-r", "--name-only", "-z", f"{rev}^{{commit}}", "--", ".")
    if listing is None:
        return None
    files = {}
    for name in filter(None, listing.split("\0")):
        if is_candidate(name):
            text = git("show", f"{rev}:./{name}")
            if text is not None:
                files[name] = text
    return files


# ------------------------------------------------------------------ the command
def add_arguments(parser: argparse.ArgumentParser, name: str = "pin") -> None:
    parser.add_argument("--dir", type=Path, default=Path("."), help="the project folder (default: the current one)")
    parser.add_argument("--vllm-version", default="", help="the release under test, given explicitly: wins over the files")
    parser.add_argument("--base", default="", metavar="REV",
                        help="also read the files of commit REV (git) and say whether the vLLM requirement changed")
    parser.add_argument("--set", default="", metavar="VERSION", dest="set_version",
                        help="rewrite every exact pin of another release to VERSION (lock files excepted: re-lock "
                             "them), print what changed, and exit")


def run(args: argparse.Namespace) -> int:
    """Prints `vllm=`, `source=` and, with --base, `base-vllm=` and
    `changed=` lines (append them to GITHUB_OUTPUT). Exits 0 with a pin,
    2 (one line on stderr) without one. With --base the lines are printed
    on exit 2 too, so a workflow can tell a PR that changed the vLLM
    requirement from one that left an unpinned requirement alone."""
    if args.set_version:
        texts, notes = bump(read_tree(args.dir), args.set_version)
        for name, text in texts.items():
            (args.dir / name).write_text(text, encoding="utf-8")
        sys.stdout.write("".join(f"bumped {note}\n" for note in notes))
        return 0
    head = mentions(read_tree(args.dir))
    problem: BadInput | None = None
    try:
        pin: Pin | None = resolve(head, args.vllm_version, str(args.dir))
    except BadInput as exc:
        pin, problem = None, exc
    lines = [f"vllm={pin.version if pin else ''}", f"source={pin.source if pin else ''}"]
    if args.base:
        files = read_rev(args.dir, args.base)
        try:
            base = mentions(files) if files is not None else None
        except BadInput:  # the base's own malformed TOML is not this PR's problem: unknown, so run
            base = None
        base_version = ""
        if base is not None:
            try:
                base_version = resolve(base, args.vllm_version).version
            except BadInput:
                pass
        if args.vllm_version:
            changed = False  # the same explicit value on both sides; a workflow edit shows in its own diff
        elif base is None:
            changed = True   # unknown: run
        else:
            changed = fingerprint(head) != fingerprint(base) or (pin is not None and pin.version != base_version)
        lines += [f"base-vllm={base_version}", f"changed={'true' if changed else 'false'}"]
    if problem is None or args.base:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    if problem is not None:
        raise problem
    return 0
