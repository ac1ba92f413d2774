"""The README's promises are checked, not just written."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme__first_lines_are_the_two_setup_commands():
    first = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines()[:2]]
    assert first[0].startswith("make demo")
    assert first[1].startswith("make test")


def test_readme__errors_live_in_docs_errors_md_only():
    """The catalogue moved out of the README (test_errors.py keeps docs/errors.md equal to the code):
    the README links it and carries no copy that could drift."""
    readme = (ROOT / "README.md").read_text()
    kinds = re.findall(r"^\| `([a-z0-9-]+)`", (ROOT / "docs" / "errors.md").read_text(), re.M)
    assert len(kinds) >= 25
    assert "(docs/errors.md)" in readme
    copied = [k for k in kinds if f"| `{k}`" in readme]
    assert not copied, f"catalogue rows in the README: {copied[:5]}"


def test_readme__quickstart_comes_first_with_a_uses_snippet():
    readme = (ROOT / "README.md").read_text()
    head = readme[:readme.index("## What it does")]
    assert re.search(r"^- uses: parity-gate/parity-gate@v\d+ ", head, re.M)
    assert "## Quickstart: your own model, your own CI" in head
    assert "hf download" in head and "--local-dir" in head  # a hub model is fetched onto the runner first
    assert readme.index("- uses: ") < readme.index("## Quickstart") < readme.index("## Installing")


def test_readme__makefile_has_the_targets_the_readme_names():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "test-fast", "bench"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme__documented_policy_defaults_match_the_code():
    from gate.core.thresholds import CHECKS, Rules

    readme = (ROOT / "README.md").read_text()
    for spec in CHECKS:
        assert f"`{spec.id}`" in readme, spec.id
    assert Rules().atol == 1e-4 and "atol 1e-4" in readme


def test_readme__every_doc_the_code_and_docs_point_to_exists():
    pattern = re.compile(r"docs/([a-z-]+\.md)")
    named = set()
    for folder in ("gate", "templates", "examples", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".j2", ".yaml", ".yml", ".md"):
                named |= set(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    named |= set(pattern.findall((ROOT / "README.md").read_text()))
    missing = sorted(n for n in named if not (ROOT / "docs" / n).is_file())
    assert not missing, missing
