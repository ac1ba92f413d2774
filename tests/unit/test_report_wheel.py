"""The templates ship inside the wheel: build it, install it into an empty
folder and render from there, away from the source tree."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RENDER = """
import importlib.resources, json, sys
from pathlib import Path
import gate.report.render
from gate.report.render import render_result
site = Path(sys.argv[1]).resolve()
assert Path(gate.report.render.__file__).resolve().is_relative_to(site), gate.report.render.__file__
assert Path(str(importlib.resources.files("gate.templates").joinpath("comment.md.j2"))).resolve().is_relative_to(site)
print(json.dumps(sorted(render_result(Path(sys.argv[2])))))
"""


def test_render__from_installed_wheel_not_source_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for name in ("gate", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "gate" / "schemas").mkdir(exist_ok=True)   # declared in pyproject; may not exist yet
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("parity_gate-*.whl"))
    # the release's wheel, as the README's install line names it (release.yml attaches dist/*.whl)
    assert f"/releases/download/v{wheel.name.split('-')[1]}/{wheel.name}" in (ROOT / "README.md").read_text()
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, cwd=tmp_path, capture_output=True)
    shutil.rmtree(src)   # nothing may fall back to it
    result = tmp_path / "result"
    result.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "verdicts" / "fail.json", result / "verdict.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", RENDER, str(site), str(result)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["comment.md", "report.html", "summary.md"]
    assert "parity-gate FAIL" in (result / "comment.md").read_text(encoding="utf-8")


def test_render__from_a_source_checkout_on_pythonpath(tmp_path: Path) -> None:
    # a GPU host without pip runs the gate from a checkout on PYTHONPATH: templates/ sits beside gate/,
    # not inside it, and no installed package maps it
    import sysconfig

    src = tmp_path / "checkout"
    for name in ("gate", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = tmp_path / "result"
    result.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "verdicts" / "fail.json", result / "verdict.json")
    probe = ("import sys; from pathlib import Path; from gate.core.fsutil import templates_root; "
             "from gate.report.render import render_result; print(templates_root()); "
             "print(sorted(render_result(Path(sys.argv[1]))))")
    # -S: no site, so no .pth of an editable install can map gate.templates; the dependencies by PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PYTHONPATH": os.pathsep.join([str(src), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])}
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(result)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(src / "templates"), "['comment.md', 'report.html', 'summary.md']"]
    (src / "templates" / "comment.md.j2").unlink()  # neither installed nor in the checkout: the documented error
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(result)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "report templates (package gate.templates) are not installed" in out.stderr
