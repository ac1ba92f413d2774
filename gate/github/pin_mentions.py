"""Every place in a project's files that names vLLM, as a `Mention`: pip
requirements and constraints files, `pyproject.toml` (PEP 621 dependencies
and optional-dependencies, PEP 735 dependency-groups, `[tool.uv]`, poetry),
`uv.lock` and `poetry.lock`, and Dockerfiles (`FROM vllm/vllm-openai:vX`,
`pip install vllm==X`). Pure: a mapping of file name to text in, mentions
out, in PATTERNS order; which release they pin is gate/github/pins.py's.
The standard library and `packaging` only."""
from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from gate.core.errors import BadInput, InfraError

__all__ = ["Mention", "mentions", "is_candidate", "normalize_version", "PATTERNS"]

PACKAGE = "vllm"
IMAGES = ("vllm/vllm-openai",)  # the official image; its tag is v<release>
# Files read, relative to the project folder, in the order they are reported.
PATTERNS = ("requirements*.txt", "requirements/*.txt", "constraints*.txt", "pyproject.toml", "uv.lock",
            "poetry.lock", "Dockerfile", "Dockerfile.*", "*.Dockerfile", "*.dockerfile")


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


# ------------------------------------------------------------------ every mention
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
