"""Child-process supervision for every engine command the gate spawns
(diagnose's ablations, calibrate's runs, weight-update's references, bisect's
probes): one command in its own process session, its output in a log, and
`run_child` returns only once the command and everything it started have
ended, so two engines never hold GPU memory at once. `error_line` picks the
real error out of a failed child's log."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["run_child", "ChildResult", "error_line", "is_gpu_memory_error", "GPU_MEMORY_HINT", "GROUP_GRACE_S"]

log = logging.getLogger(__name__)

# The line the CLI writes for every typed error (gate/cli.py): "parity-gate: <kind>: ...".
_GATE_ERROR = re.compile(r"^parity-gate: (?:bad input|stale golden|infrastructure failure|internal error|error|"
                         r"interrupted)\b.*")
# "ValueError: ...", "torch.OutOfMemoryError: ...", also inside a vLLM log line ("ERROR ... [core.py:9] X: ...").
_EXCEPTION = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::\s.*|:?$)")
# Root causes worth naming even when a wrapper exception is the last word.
_ROOT_CAUSES = ("No available memory for the cache blocks", "CUDA out of memory", "OutOfMemoryError",
                "less than desired GPU memory utilization", "Free memory on device")
# Wrappers that only point elsewhere ("See root cause above").
_WRAPPERS = ("See root cause above", "Engine core initialization failed", "EngineDeadError", "EngineGenerateError")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
GPU_MEMORY_HINT = ("an engine needs its gpu_memory_utilization share of the whole card free when it starts: "
                   "is another engine (the parent's own?) still holding GPU memory?")
GROUP_GRACE_S = 10.0


def _clip(line: str, n: int = 400) -> str:
    line = " ".join(line.split())
    return line if len(line) <= n else line[:n - 3] + "..."


def error_line(text: str) -> str:
    """The real error in a failed child's output, not its last line (on a GPU
    that is an NCCL shutdown warning). The CLI's own error line first, then
    the exception that caused it when the log names a more specific one (a
    vLLM engine-core failure logs its cause above a generic wrapper)."""
    lines = [_ANSI.sub("", raw).strip() for raw in text.splitlines()]
    lines = [x for x in lines if x]
    gate = next((x for x in reversed(lines) if _GATE_ERROR.match(x)), None)
    exceptions = []
    for x in lines:
        m = None if _GATE_ERROR.match(x) or x.startswith("Traceback") else _EXCEPTION.search(x)
        if m:
            exceptions.append(m.group(0))
    known = next((e for e in reversed(exceptions) if any(c in e for c in _ROOT_CAUSES)), None)
    if known is None:
        known = next((x for x in reversed(lines) if any(c in x for c in _ROOT_CAUSES)), None)
    specific = next((e for e in reversed(exceptions) if not any(w in e for w in _WRAPPERS)), None)
    cause = known or specific or (exceptions[-1] if exceptions else None)
    if gate and cause and " ".join(cause.split())[:100] not in " ".join(gate.split()):
        return f"{_clip(gate)}; cause in the log: {_clip(cause)}"
    if gate or cause:
        return _clip(gate or cause)  # type: ignore[arg-type]
    return _clip(lines[-1]) if lines else "no output"


def is_gpu_memory_error(text: str) -> bool:
    return any(c in text for c in _ROOT_CAUSES)


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    seconds: float
    timed_out: bool
    log: Path | None
    pid: int                     # also its process group's id
    left_behind: int = 0         # processes of its group still running after it exited (then ended)


def _group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes of a process group, from /proc; None where
    there is no /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def _group_alive(pgid: int) -> bool:
    members = _group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_group(pgid: int, grace_s: float) -> int:
    """Wait up to `grace_s` for the group to empty, then SIGTERM it, then
    SIGKILL it. Returns how many were still running after the grace. The
    group is the child's own session (start_new_session), so this touches
    nothing else."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    members = _group_members(pgid)
    left = len(members) if members is not None else int(_group_alive(pgid))
    if not left:
        return 0
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    if _group_alive(pgid):
        log.warning("process group %d did not end after SIGKILL", pgid)
    return left


def run_child(cmd: Sequence[str], log_path: Path | None, timeout: float, env: dict[str, str] | None = None,
              grace_s: float = GROUP_GRACE_S) -> ChildResult:
    """Run one engine command in its own process session, output (stdout and
    stderr) into `log_path`, and return only once it and everything it
    started have ended: an engine-core helper left running would still hold
    its share of the GPU, and the next engine could not start. On timeout
    the whole group is killed."""
    t = time.monotonic()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path or os.devnull, "w") as fh:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's group only
            except ProcessLookupError:
                pass
            rc = proc.wait()
    left = _end_group(proc.pid, 0.0 if timed_out else grace_s)
    if left:
        log.warning("%s left %d process(es) running after it exited; ended them",
                    log_path or " ".join(map(str, cmd[:4])), left)
    return ChildResult(rc, time.monotonic() - t, timed_out, log_path, proc.pid, left)
