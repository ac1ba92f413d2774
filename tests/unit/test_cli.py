"""What `parity-gate --help` and `--version` say, and what `import gate` costs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gate
from gate.cli import COMMANDS, EXAMPLES
from tests._util import run_cli

ROOT = Path(__file__).resolve().parent.parent.parent


def test_cli__help_says_what_the_tool_does_with_an_example_per_command_and_the_exit_codes():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Gate a vLLM upgrade" in out
    assert "The only place that turns typed errors" not in out  # the module's docstring is for developers
    assert set(EXAMPLES) == set(COMMANDS)
    for name, example in EXAMPLES.items():
        assert example.startswith(f"parity-gate {name}"), name
        assert example in out, name
    for code in "0123":
        assert re.search(rf"^  {code}  \S", out, re.M), code


def test_cli__each_command_help_ends_with_its_example():
    proc = run_cli("compare", "--help")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(EXAMPLES["compare"])


def test_cli__version_prints_the_package_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"parity-gate {gate.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'\nversion = "{gate.__version__}"\n' in pyproject


def test_cli__import_gate_and_help_stay_free_of_numpy():
    code = ("import sys, gate, gate.cli; gate.cli.build_parser(); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'jinja2', 'yaml', 'requests', "
            "'torch', 'vllm', 'pydantic'}); print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli__public_names_still_import_from_gate():
    for name in gate.__all__:
        assert getattr(gate, name) is not None, name
    from gate import TraceWriter, compare_traces  # noqa: F401 - `from gate import X` resolves lazily too
