"""The answer to a `/parity-gate accept|diagnose|bisect` command, from what
the GPU job's run of it wrote (`parity-gate pr-command answer`): for accept,
the new golden committed to the PR branch (same-repository PRs) or where to
download it (forks); for diagnose and bisect, what they found, in Markdown.
A command that cannot be answered raises `Refusal`; the desk
(gate/github/pr_commands.py) puts either into the sticky comment."""
from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Mapping

from gate.core.errors import EXIT_INFRA, BadInput
from gate.core.verdict import read_verdict
from gate.github.api import ApiError, GitHubAPI, MaybeApplied, PermissionDenied
from gate.github.outcome import one_line
from gate.github.pr_comment import FILE_LIMIT, Plan, Refusal, git_blob_sha
from gate.report.markdown import md_inline

__all__ = ["accepted", "diagnosed", "bisected", "failed"]

log = logging.getLogger(__name__)


def failed(work: Path, exit_code: int, what: str) -> Refusal:
    """Why the GPU job's run of the command gave no answer: it left nothing, or it failed (with the
    one line of its error.json, if any)."""
    if not work.exists():
        return Refusal(f"{what} did not finish: the GPU job left nothing (cancelled, timed out, or replaced "
                       "by a later command on this PR). Comment again.", EXIT_INFRA)
    line = ""
    error = work / "error.json"
    if error.is_file():
        try:
            line = str(json.loads(error.read_text(encoding="utf-8")).get("error") or "")
        except (OSError, ValueError):
            line = ""
    return Refusal(f"{what} failed (exit {exit_code}){': ' + md_inline(line, 300) if line else ''}; "
                   "see the command run's log.", EXIT_INFRA)

def accepted(api: GitHubAPI, plan: Plan, golden: Path, exit_code: int, artifact_url: str | None,
             run_url: str | None) -> str:
    """accept: the golden the GPU job recorded, committed to the PR branch through the contents API
    (file by file, unchanged files skipped, with a `success` status on the commit that says who
    accepted it); for a fork, where to find it. Refusal when nothing can be committed."""
    if exit_code != 0:
        raise failed(golden, exit_code, f"Recording the golden on vLLM {plan.run_release}")
    files = sorted(p for p in golden.rglob("*") if p.is_file() and not p.is_symlink()) if golden.is_dir() else []
    if not any(p.name == "traces.jsonl" for p in files):
        raise Refusal("The GPU job left no golden (no traces.jsonl); see the command run's log.")
    what = (f"what moved: {md_inline(plan.headline, 300)} (golden on vLLM {plan.golden_release}, "
            f"this PR on {plan.run_release})")
    if plan.fork:
        where = f"[the artifact]({artifact_url})" if artifact_url else "the command run's artifact"
        return (f"re-recorded the golden on vLLM {plan.run_release}; {what}. This PR comes from a fork, which "
                f"this workflow cannot push to: download {where}, unpack it into `{plan.golden_path}/` of the "
                "PR branch, commit and push. The gate then compares against the base branch's golden until "
                "the PR merges; a maintainer's accept is the record that the drift was meant.")
    pull = api.pull(plan.repository, plan.pr_number)
    now = (pull.get("head") or {}).get("sha")
    if now != plan.head_sha:
        raise Refusal(f"The PR moved on to {now} while the golden was recorded for {plan.head_sha}; nothing was "
                      "committed. Wait for the gate on the new head, then comment again.")
    for path in files:
        if path.stat().st_size > FILE_LIMIT:
            raise Refusal(f"`{md_inline(path.name, 60)}` is {path.stat().st_size} bytes, over the "
                          f"{FILE_LIMIT >> 20} MiB this command commits through the API; nothing was committed. "
                          "Store goldens that large with Git LFS or as a release asset (docs/github.md).")
    changed, same, commit = [], [], None
    message = (f"parity-gate: accept the golden re-recorded on vLLM {plan.run_release}\n\n"
               f"Accepted by @{plan.commenter} in #{plan.pr_number} (was vLLM {plan.golden_release}): "
               f"{plan.headline}")
    for path in files:
        rel = path.relative_to(golden).as_posix()
        remote = f"{plan.golden_path.rstrip('/')}/{rel}"
        data = path.read_bytes()
        sha = api.file_sha(plan.repository, remote, plan.head_ref)
        if sha == git_blob_sha(data):
            same.append(rel)
            continue
        try:
            answer = api.put_file(plan.repository, remote, base64.b64encode(data).decode("ascii"),
                                       message=message, branch=plan.head_ref, sha=sha)
        except MaybeApplied:
            if api.file_sha(plan.repository, remote, plan.head_ref) != git_blob_sha(data):
                raise
            answer = {"commit": {"sha": (api.pull(plan.repository, plan.pr_number).get("head") or {})
                                 .get("sha")}}
        except PermissionDenied as exc:
            raise Refusal(f"GitHub refused the commit to `{md_inline(plan.head_ref, 100)}` (HTTP {exc.status}); "
                          "nothing was committed. The answer job needs `contents: write` (and a token that "
                          "may push to the branch: protected branches refuse it).", EXIT_INFRA) from None
        except ApiError as exc:
            if exc.status == 409:
                done = f" ({', '.join(changed)} already committed)" if changed else ""
                raise Refusal(f"The branch `{md_inline(plan.head_ref, 100)}` moved while the golden was "
                              f"committed{done}. Comment again on the new head.") from None
            raise
        changed.append(rel)
        commit = (answer.get("commit") or {}).get("sha") or commit
    if not changed:
        raise Refusal(f"Nothing to accept: `{md_inline(plan.golden_path, 100)}/` on "
                      f"`{md_inline(plan.head_ref, 100)}` already is what vLLM {plan.run_release} records.")
    if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit):
        # The maintainer's word is the verdict on the commit the accept made
        # (and on that one only: any later push is gated again).
        try:
            api.create_status(plan.repository, commit, state="success", context=plan.status_context,
                                   description=one_line(f"accepted by @{plan.commenter}: golden re-recorded "
                                                        f"on vLLM {plan.run_release}", 140),
                                   target_url=run_url)
        except ApiError as exc:
            log.warning("could not post the accepted status on %s: %s", commit, exc.what)
    files_note = ", ".join(f"`{md_inline(f, 60)}`" for f in changed)
    if same:
        files_note += f" ({len(same)} unchanged)"
    return (f"accepted. Re-recorded the golden on vLLM {plan.run_release} and committed {files_note} to "
            f"`{md_inline(plan.head_ref, 100)}` in {commit}; {what}. The `{md_inline(plan.status_context, 60)}` "
            "status on that commit says who accepted it; a later push is gated again.")

def diagnosed(result: Path, exit_code: int) -> str:
    """diagnose: its summary and the table of ablations, from the verdict it wrote."""
    if exit_code != 0:
        raise failed(result, exit_code, "The diagnosis")
    try:
        diagnosis = read_verdict(result).get("diagnosis")
    except BadInput as exc:
        raise Refusal(f"The diagnosis left no readable verdict: {md_inline(exc.what, 300)}") from None
    if not isinstance(diagnosis, Mapping) or not diagnosis.get("summary"):
        raise Refusal("The diagnosis wrote nothing into verdict.json; see the command run's log.")
    lines = [f"{md_inline(diagnosis['summary'], 1500)}", ""]
    findings = [f for f in diagnosis.get("findings") or [] if isinstance(f, Mapping)]
    if findings:
        lines += ["| ablation | restores parity | detail |", "|---|---|---|"]
        for f in findings[:20]:
            restores = "yes" if f.get("restores_parity") else "no"
            lines.append(f"| {md_inline(f.get('cause') or f.get('ablation'), 120)} | {restores} | "
                         f"{md_inline(f.get('detail') or '', 300)} |")
    return "\n".join(lines)

def bisected(plan: Plan, out: Path, exit_code: int) -> str:
    """bisect: the first drifting release, from the bisect.json it wrote."""
    if exit_code not in (0, 1):
        raise failed(out, exit_code, f"The bisect of vLLM {plan.golden_release} → {plan.run_release}")
    try:
        doc = json.loads((out / "bisect.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise Refusal("The bisect left no readable bisect.json; see the command run's log.") from None
    first = doc.get("first_bad") if isinstance(doc, dict) else None
    if exit_code == 0 or not isinstance(first, str):
        return (f"nothing fails at vLLM {plan.run_release} when the bisect checks it again (a flaky check?); "
                "see the command run's artifact.")
    probes = [p for p in doc.get("probes") or [] if isinstance(p, Mapping)]
    unchanged = [str(p.get("name")) for p in probes if p.get("moved") is False]
    notes = doc.get("release_notes")
    line = f"first drifting release: **{md_inline(first, 40)}**"
    if isinstance(notes, str) and notes.startswith("https://github.com/"):
        line += f" ([release notes]({notes}))"
    if unchanged:
        line += f"; {md_inline(', '.join(unchanged), 300)} unchanged"
    return line + "."
