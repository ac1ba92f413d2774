"""`parity-gate pin`: which vLLM release a project pins, found in the files
where projects pin it, without installing anything (docs/github.md,
"Finding the vLLM pin, and skipping the GPU run").

Read, in this order: `requirements*.txt`, `requirements/*.txt` and
`constraints*.txt` (pip), `pyproject.toml` (PEP 621 dependencies and
optional-dependencies, PEP 735 dependency-groups, `[tool.uv]`, poetry),
`uv.lock` and `poetry.lock`, and Dockerfiles (`FROM vllm/vllm-openai:vX`,
`pip install vllm==X`). Every place that names vLLM is a *mention*; one that
names a single release (`==X`, a lock entry, an image tag) is exact. The pin
is the release the exact mentions agree on; a range elsewhere must admit it.
An explicit `--vllm-version` wins over the files.

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
import fnmatch
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from gate.core.errors import BadInput, InfraError

__all__ = ["Mention", "Pin", "mentions", "resolve", "bump", "fingerprint", "read_tree", "read_rev", "PATTERNS",
           "normalize_version", "add_arguments", "run"]

PACKAGE = "vllm"
IMAGES = ("vllm/vllm-openai",)  # the official image; its tag is v<release>
# Files read, relative to the project folder, in the order they are reported.
PATTERNS = ("requirements*.txt", "requirements/*.txt", "constraints*.txt", "pyproject.toml", "uv.lock",
            "poetry.lock", "Dockerfile", "Dockerfile.*", "*.Dockerfile", "*.dockerfile")
WHERE = "requirements*.txt, constraints*.txt, pyproject.toml, uv.lock, poetry.lock or a Dockerfile"
# The shape action.yml accepts for its vllm-version input (an image tag after the v).
VERSION_SHAPE = re.compile(r"^[0-9][0-9A-Za-z._-]{0,100}$")
HINT = ("pin one release (e.g. vllm==0.32.0), commit a uv.lock, or give the version explicitly "
        "(the workflow's PARITY_GATE_VLLM, parity-gate pin --vllm-version)")
FILE_LIMIT = 32 * 1024 * 1024  # a lock file of a large project is a few MB


@dataclass(frozen=True)
class Mention:
    """One place that names vLLM. `version` is the one release it names,
    or None for a range, a bare name, a URL or an untagged image."""

    file: str
    line: int
    spec: str                # as written, for messages and for telling whether it changed
    version: str | None
    specifier: str = ""      # the PEP 440 range of an inexact requirement ("" when none can be read)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def described(self) -> str:
        return f"{self.where}: {self.spec}"


@dataclass(frozen=True)
class Pin:
    version: str
    source: str              # "requirements.txt:3" (the first exact mention), or "--vllm-version"
    mentions: tuple[Mention, ...] = ()


def normalize_version(text: str) -> str:
    """'v0.32.0' and '0.32.0' -> '0.32.0'; the local part of '0.32.0+cu128' is dropped (no image tag carries it)."""
    text = text.strip()
    text = text[1:] if text[:1] in ("v", "V") else text
    return text.split("+", 1)[0]


# ------------------------------------------------------------------ requirement strings (PEP 508)
def _requirement(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _from_requirement(req: Requirement, file: str, line: int, spec: str) -> Mention:
    if req.url:
        return Mention(file, line, spec, None)
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return Mention(file, line, spec, normalize_version(specs[0].version), str(req.specifier))
    return Mention(file, line, spec, None, str(req.specifier))


def _is_vllm(name: str) -> bool:
    return canonicalize_name(name) == PACKAGE


# ------------------------------------------------------------------ pip requirements and constraints files
_OPTION_TAIL = re.compile(r"\s+--?[A-Za-z]")  # `--hash=...` and other per-requirement options


def _logical_lines(text: str, comment: str = "#") -> Iterator[tuple[int, str]]:
    """(first line number, text) of each logical line: backslash continuations
    joined, comments (a `#` at the start or after whitespace) dropped."""
    start, parts = 0, []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(rf"(^|\s){re.escape(comment)}.*$", "", raw)
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        joined = " ".join(p.strip() for p in parts).strip()
        parts = []
        if joined:
            yield start, joined
    if parts:
        joined = " ".join(p.strip() for p in parts).strip()
        if joined:
            yield start, joined


def _requirements_file(name: str, text: str) -> list[Mention]:
    found = []
    for number, line in _logical_lines(text):
        if line.startswith("-"):  # -r, -c, -e, --index-url ...: not a requirement of vLLM itself
            continue
        spec = _OPTION_TAIL.split(line, maxsplit=1)[0].strip()
        req = _requirement(spec)
        if req is not None and _is_vllm(req.name):
            found.append(_from_requirement(req, name, number, spec))
    return found


# ------------------------------------------------------------------ TOML: pyproject.toml, uv.lock, poetry.lock
def _toml(name: str, text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise InfraError(f"{name}: reading TOML needs Python 3.11 or newer (tomllib)",
                         "run parity-gate pin with Python 3.11+ (actions/setup-python)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        where = f"{name}:{m.group(1)}" if m else name
        raise BadInput(f"{where}: malformed TOML ({exc})", f"fix the TOML syntax of {name}") from None


class _Lines:
    """Line numbers for values tomllib found (it gives none): the first line
    holding the needle that no earlier mention took."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.taken: set[int] = set()

    def find(self, pattern: re.Pattern[str]) -> int:
        first = 0
        for number, line in enumerate(self.lines, 1):
            if pattern.search(line):
                first = first or number
                if number not in self.taken:
                    self.taken.add(number)
                    return number
        return first or 1

    def literal(self, value: str) -> int:
        return self.find(re.compile(r"""["']""" + re.escape(value) + r"""["']"""))

    def key(self, name: str) -> int:
        return self.find(re.compile(r"""^\s*["']?""" + re.escape(name) + r"""["']?\s*="""))


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _poetry_constraint(value: Any) -> list[str]:
    """Poetry's `vllm = "0.32.0"`, `{version = "^0.32"}` or a list of such tables."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [value["version"]] if isinstance(value.get("version"), str) else [""]
    if isinstance(value, list):
        return [c for item in value for c in _poetry_constraint(item)]
    return []


def _poetry_mention(file: str, line: int, key: str, constraint: str) -> Mention:
    spec = f'{key} = "{constraint}"'
    c = constraint.strip()
    if re.fullmatch(r"={0,3}\s*[0-9][0-9A-Za-z.+!_-]*", c):  # poetry: a bare version is exact
        return Mention(file, line, spec, normalize_version(c.lstrip("= ")), f"=={c.lstrip('= ')}")
    try:  # PEP 440 ranges read as such; poetry's caret and tilde ranges are kept as written
        specifier = str(SpecifierSet(c))
    except InvalidSpecifier:
        specifier = "" if c in ("", "*") else c
    return Mention(file, line, spec, None, specifier)


def _pyproject(name: str, text: str) -> list[Mention]:
    data = _toml(name, text)
    lines = _Lines(text)
    found: list[Mention] = []

    def pep508(values: Iterable[str]) -> None:
        for value in values:
            req = _requirement(value)
            if req is not None and _is_vllm(req.name):
                found.append(_from_requirement(req, name, lines.literal(value), value))

    project = data.get("project") if isinstance(data.get("project"), dict) else {}
    pep508(_strings(project.get("dependencies")))
    optional = project.get("optional-dependencies")
    for group in optional.values() if isinstance(optional, dict) else ():
        pep508(_strings(group))
    groups = data.get("dependency-groups")
    for group in groups.values() if isinstance(groups, dict) else ():
        pep508(_strings(group))  # {include-group = ...} tables name no package
    tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
    uv = tool.get("uv") if isinstance(tool.get("uv"), dict) else {}
    for key in ("dev-dependencies", "constraint-dependencies", "override-dependencies"):
        pep508(_strings(uv.get(key)))
    poetry = tool.get("poetry") if isinstance(tool.get("poetry"), dict) else {}
    tables = [poetry.get("dependencies"), poetry.get("dev-dependencies")]
    groups = poetry.get("group")
    tables += [g.get("dependencies") for g in groups.values() if isinstance(g, dict)] if isinstance(groups, dict) else []
    for table in tables:
        for key, value in table.items() if isinstance(table, dict) else ():
            if _is_vllm(key):
                for constraint in _poetry_constraint(value):
                    found.append(_poetry_mention(name, lines.key(key), key, constraint))
    return found


def _lock(name: str, text: str) -> list[Mention]:
    """uv.lock and poetry.lock: `[[package]] name = "vllm" version = "0.32.0"`."""
    data = _toml(name, text)
    lines = _Lines(text)
    found = []
    for package in data.get("package") or []:
        if isinstance(package, dict) and isinstance(package.get("name"), str) and _is_vllm(package["name"]):
            version = package.get("version")
            line = lines.find(re.compile(r"""^\s*name\s*=\s*["']""" + re.escape(package["name"]) + r"""["']"""))
            if isinstance(version, str) and version:
                found.append(Mention(name, line, f'{package["name"]} {version}', normalize_version(version),
                                     f"=={version}"))
            else:  # a path or editable source: no release
                found.append(Mention(name, line, f'{package["name"]} (no version)', None))
    return found


# ------------------------------------------------------------------ Dockerfiles
_VAR = re.compile(r"\$(?:\{(\w+)(?::?[-+][^}]*)?\}|(\w+))")


def _substitute(text: str, args: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in args:
            return args[name]
        default = re.match(r"\$\{\w+:?-([^}]*)\}", m.group(0))
        return default.group(1) if default else m.group(0)
    for _ in range(5):  # ARG defaults may name earlier ARGs
        new = _VAR.sub(one, text)
        if new == text:
            break
        text = new
    return text


def _image(ref: str) -> tuple[str, str | None] | None:
    """'docker.io/vllm/vllm-openai:v0.32.0@sha256:..' -> ('vllm/vllm-openai', 'v0.32.0'); None if not vLLM's."""
    ref = ref.split("@", 1)[0]
    name, tag = ref, None
    if ":" in ref.rsplit("/", 1)[-1]:
        name, tag = ref.rsplit(":", 1)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("library/")
    return (name, tag) if name in IMAGES else None


def _install_requirements(command: str) -> Iterator[str]:
    """The requirement arguments of `pip install` / `uv pip install` / `uv add` in a shell command."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    installing = False
    seen: list[str] = []
    for token in tokens:
        if token in ("&&", "||", ";", "|") or token.endswith(";"):
            installing, seen = False, []
            continue
        if not installing:
            seen.append(token)
            tail = [t.rsplit("/", 1)[-1] for t in seen[-3:]]
            if (token == "install" and any(t.startswith("pip") for t in tail[:-1])) or tail[-2:] == ["uv", "add"]:
                installing = True
            continue
        if not token.startswith("-"):
            yield token


def _dockerfile(name: str, text: str) -> list[Mention]:
    args: dict[str, str] = {}
    found = []
    for number, line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            for item in rest.split():
                key, eq, value = item.partition("=")
                if eq and key not in args:
                    args[key] = _substitute(value.strip("\"'"), args)
        elif instruction == "FROM":
            words = [w for w in _substitute(rest, args).split() if not w.startswith("--")]
            image = _image(words[0]) if words else None
            if image is not None:
                tag = image[1]
                version = normalize_version(tag) if tag and re.fullmatch(r"[vV]?[0-9][0-9A-Za-z._-]*", tag) else None
                found.append(Mention(name, number, f"FROM {words[0]}", version, f"=={version}" if version else ""))
        elif instruction == "RUN":
            for token in _install_requirements(_substitute(rest, args)):
                req = _requirement(token)
                if req is not None and _is_vllm(req.name):
                    found.append(_from_requirement(req, name, number, f"pip install {token}"))
    return found


# ------------------------------------------------------------------ the pin
def _reader(name: str):
    base = name.rsplit("/", 1)[-1]
    if base == "pyproject.toml":
        return _pyproject
    if base in ("uv.lock", "poetry.lock"):
        return _lock
    if base.endswith(".txt"):
        return _requirements_file
    return _dockerfile


def _rank(name: str) -> tuple[int, str]:
    for index, pattern in enumerate(PATTERNS):
        if fnmatch.fnmatchcase(name, pattern):
            return index, name
    return len(PATTERNS), name


def is_candidate(name: str) -> bool:
    return _rank(name)[0] < len(PATTERNS)


def mentions(files: Mapping[str, str]) -> list[Mention]:
    """Every place in `files` (relative name -> text) that names vLLM, in PATTERNS order."""
    found: list[Mention] = []
    for name in sorted((n for n in files if is_candidate(n)), key=_rank):
        found += _reader(name)(name, files[name])
    return found


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
