"""The import rule (docs/architecture.md section 3), enforced: a module of
gate/ imports only from its own layer or below, and nothing below the command
layer imports gate.commands, gate.record, gate.cli or gate.action. Read from the source
(ast), so a function-local import counts as much as a top-level one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATE = Path(__file__).resolve().parents[2] / "gate"
LAYERS = ["core", "run", "report", "studies", "github", "command"]
COMMAND_MODULES = {"commands", "record", "cli", "action", "__main__", "__init__"}


def _layer(module: str) -> str:
    """'gate.core.trace' -> 'core'; 'gate.cli' -> 'command'; 'gate' (the package's lazy names) -> 'core'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # `from gate import __version__`: the version string, nothing above
    if parts[1] in LAYERS[:-1]:
        return parts[1]
    if parts[1] in ("schemas", "templates"):
        return "core"  # package data
    return "command"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "gate":
            if node.module == "gate":
                out += [(node.lineno, f"gate.{a.name}") if a.name in LAYERS or a.name in COMMAND_MODULES
                        else (node.lineno, "gate") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "gate"]
    return out


MODULES = sorted(p for p in GATE.rglob("*.py") if "templates" not in p.parts)


def test_every_module_is_in_a_layer():
    flat = {p.stem for p in GATE.glob("*.py")}
    assert flat == COMMAND_MODULES, f"modules outside a layer subpackage: {sorted(flat - COMMAND_MODULES)}"
    assert {p.name for p in GATE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= set(LAYERS[:-1])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(GATE.parent)))
def test_imports_point_down(path: Path):
    rel = path.relative_to(GATE.parent).with_suffix("")
    me = ".".join(rel.parts).removesuffix(".__init__")
    mine = LAYERS.index(_layer(me))
    bad = [f"line {line}: {mod} ({_layer(mod)})" for line, mod in _imports(path)
           if LAYERS.index(_layer(mod)) > mine]
    assert not bad, f"{me} ({LAYERS[mine]}) imports a layer above it: {bad}"


def test_the_rule_catches_an_upward_import(tmp_path: Path):
    """The checker itself: a core module importing the report layer is flagged."""
    bad = tmp_path / "x.py"
    bad.write_text("from gate.report.render import render\nimport gate.core.trace\n")
    found = [(line, mod) for line, mod in _imports(bad) if LAYERS.index(_layer(mod)) > LAYERS.index("core")]
    assert found == [(1, "gate.report.render")]
