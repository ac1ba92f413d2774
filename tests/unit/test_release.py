"""Releases people can pin: one version in pyproject.toml, gate/__init__.py
and CHANGELOG.md; every `uses:`, `pip install` and `docker build` line in the
README, docs and example workflows names the one repository and a tag of
the release scheme (vMAJOR or vMAJOR.MINOR.PATCH); the release workflow
fires on exactly those tags."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

import gate

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "parity-gate/parity-gate"  # docs/github.md, "Versions and where the action lives"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
MAJOR = VERSION.split(".")[0]


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "DEVELOPERS.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "examples" / "workflows").glob("*.yml"))]


def _lines(pattern: str) -> list[tuple[str, str]]:
    found = []
    for path in _documents():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(pattern, line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group(0)))
    return found


def _ref_ok(ref: str) -> bool:
    return ref in (f"v{MAJOR}", f"v{VERSION}")


def test_release__one_version_in_pyproject_package_and_changelog():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert sections[0] == ("Unreleased", ""), "keep an [Unreleased] section on top"
    released = [(v, d) for v, d in sections[1:]]
    assert released and all(d for _, d in released), "every released section has a date"
    assert released[0][0] == VERSION == gate.__version__
    versions = [tuple(int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)", v).groups()) for v, _ in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    for name, _ in sections:  # every heading has its link
        assert re.search(rf"^\[{re.escape(name)}\]: https://github.com/{REPOSITORY}/", changelog, re.M), name


def test_release__every_uses_line_names_the_repository_at_a_release_tag():
    uses = _lines(r"uses: [\w.-]+/parity-gate(?:/[\w./-]+)?@[\w.-]+")
    assert len(uses) >= 5  # README, docs/github.md and three example workflows
    for where, text in uses:
        repo, ref = text.removeprefix("uses: ").split("@")
        assert repo == REPOSITORY and _ref_ok(ref), f"{where}: {text} (want {REPOSITORY}@v{MAJOR})"


def test_release__every_install_line_can_work():
    """pip installs parity-gate from a git tag or the release's wheel, never from an index it is not on."""
    git = _lines(r"git\+https://github\.com/[\w.-]+/parity-gate(?:\.git)?@[\w.-]+")
    assert len(git) >= 5
    for where, text in git:
        repo, ref = text.removeprefix("git+https://github.com/").split("@")
        assert repo.removesuffix(".git") == REPOSITORY and _ref_ok(ref), f"{where}: {text}"
    wheels = _lines(r"https://github\.com/[\w.-]+/parity-gate/releases/download/\S+\.whl")
    assert wheels
    for where, text in wheels:
        assert text == (f"https://github.com/{REPOSITORY}/releases/download/v{VERSION}/"
                        f"parity_gate-{VERSION}-py3-none-any.whl"), where
    from_index = _lines(r"pip install (?:-\S+ )*['\"]?parity-gate(?:\[\w+\])?['\"]?(?!\S| @)")
    assert not from_index, f"parity-gate is not on PyPI: {from_index}"
    builds = _lines(r"https://github\.com/[\w.-]+/parity-gate\.git#[\w.-]+")
    for where, text in builds:
        repo, ref = text.removeprefix("https://github.com/").split("#")
        assert repo == f"{REPOSITORY}.git" and _ref_ok(ref), f"{where}: {text}"


def test_release__no_hosting_placeholder_is_left():
    assert not _lines(r"(?i)replace (this )?with where you host")


def _tag_filter(pattern: str) -> re.Pattern[str]:
    """A GitHub filter pattern as a regex: * is any run without '/', + and [] as in regexes, '.' literal."""
    out = ""
    for char in pattern:
        out += {".": r"\.", "*": "[^/]*"}.get(char, char)
    return re.compile(out)


def test_release__workflow_fires_on_release_tags_only_and_moves_the_major():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    on = wf.get("on") or wf.get(True)
    filters = [_tag_filter(p) for p in on["push"]["tags"]]
    fires = lambda tag: any(f.fullmatch(tag) for f in filters)  # noqa: E731
    assert fires(f"v{VERSION}") and fires("v1.2.3") and fires("v2.0.0rc1")
    assert not fires(f"v{MAJOR}") and not fires("v1.2") and not fires("latest")  # moving v1 fires nothing
    jobs = wf["jobs"]
    assert jobs["release"]["needs"] == ["wheel", "image"]
    push = next(s for s in jobs["image"]["steps"] if s.get("id") == "push")
    assert "BASE_IMAGE=${{ steps.base.outputs.image }}" in push["with"]["build-args"]
    base = next(s for s in jobs["image"]["steps"] if s.get("id") == "base")["run"]
    assert "@${digest}" in base and "^sha256:[0-9a-f]{64}$" in base
    moves = next(s for s in jobs["release"]["steps"] if s.get("name", "").startswith("Move the major tag"))
    assert 'major="${TAG%%.*}"' in moves["run"] and moves["if"] == "needs.wheel.outputs.prerelease == 'false'"
    assert "gh release create" in jobs["release"]["steps"][-2]["run"]
    assert wf["concurrency"]["group"] == "parity-gate-release"


def test_release__dockerfile_takes_the_base_image_as_a_build_arg():
    """The release pins the base by digest through this argument; the action's own build uses its default."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=vllm/vllm-openai:v\$\{VLLM_VERSION\}$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
