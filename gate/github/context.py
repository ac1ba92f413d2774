"""Where a run stands on GitHub: repository, event, PR number, head sha, API
base and token, read once from the standard Actions variables.

Statuses go on the PR's *head* sha: on `pull_request` GITHUB_SHA is the
merge commit, and a status there never turns the required check green
(docs/design.md section 5)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from gate.core.errors import BadInput

__all__ = ["GitHubContext", "ResultOrigin", "ORIGIN_FILE", "UNVERIFIED_SUFFIX", "GOLDEN_SHA_VARIABLE",
           "context_from_env", "read_event", "unverified_context"]

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
# Written beside verdict.json by `action`, so a later `publish` on
# workflow_run knows which PR and commit the result belongs to.
ORIGIN_FILE = "github.json"
# The commit the suite and golden were read from (action.yml's golden step).
GOLDEN_SHA_VARIABLE = "PARITY_GATE_GOLDEN_SHA"
# A result computed by a workflow that a fork controls is published under
# "<context> (fork, unverified)", never under the required context itself.
# action.yml's error step appends the same suffix.
UNVERIFIED_SUFFIX = " (fork, unverified)"
_CONTEXT_LIMIT = 255
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class GitHubContext:
    repository: str | None
    event_name: str | None
    api_url: str = DEFAULT_API_URL
    server_url: str = DEFAULT_SERVER_URL
    run_id: str | None = None
    run_attempt: str | None = None
    sha: str | None = None
    head_sha: str | None = None
    pr_number: int | None = None
    # workflow_run only: the triggering run, whose result is being published.
    triggering_run_id: int | None = None
    triggering_run_attempt: int | None = None
    triggering_event: str | None = None     # workflow_run.event
    from_fork: bool = False
    golden_sha: str | None = None           # where suite and golden came from
    output_path: Path | None = None
    step_summary_path: Path | None = None
    token: str = field(default="", repr=False)

    def _url_of_run(self, run_id: object, attempt: object) -> str | None:
        if not (self.repository and run_id):
            return None
        url = f"{self.server_url}/{self.repository}/actions/runs/{run_id}"
        return f"{url}/attempts/{attempt}" if str(attempt or "1") != "1" else url

    @property
    def run_url(self) -> str | None:
        """This workflow run."""
        return self._url_of_run(self.run_id, self.run_attempt)

    @property
    def gate_run_url(self) -> str | None:
        """The run that computed the result: on workflow_run the triggering
        run (from the event payload, never from the artifact), where the
        report and its log are; otherwise this run."""
        if self.triggering_run_id is not None:
            return self._url_of_run(self.triggering_run_id, self.triggering_run_attempt)
        return self.run_url

    @property
    def unverified(self) -> bool:
        """The result was computed by a workflow file and code that a fork
        controls: a `pull_request` from a fork, or a `workflow_run` of one.
        It can say whatever it likes, so it must never turn the required
        check green. `pull_request_target` runs the base's workflow: trusted."""
        if not self.from_fork:
            return False
        if self.event_name == "workflow_run":
            return self.triggering_event != "pull_request_target"
        return self.event_name != "pull_request_target"

    @property
    def can_post(self) -> bool:
        return bool(self.token and self.repository and self.head_sha)

    def with_origin(self, origin: "ResultOrigin") -> "GitHubContext":
        """Fill PR number and head sha from a result's github.json where the
        event did not give them (workflow_run of a fork PR)."""
        return replace(self, pr_number=self.pr_number or origin.pr_number,
                       head_sha=self.head_sha or origin.head_sha,
                       golden_sha=self.golden_sha or origin.golden_sha)


def unverified_context(context: str) -> str:
    """The status context a fork's result is published under."""
    return context[: _CONTEXT_LIMIT - len(UNVERIFIED_SUFFIX)] + UNVERIFIED_SUFFIX


@dataclass(frozen=True)
class ResultOrigin:
    """The PR and commit a result dir was produced for (RESULT_DIR/github.json)."""

    repository: str | None
    pr_number: int | None
    head_sha: str | None
    event_name: str | None
    run_id: str | None
    golden_sha: str | None = None

    def to_json(self) -> str:
        return json.dumps({"schema": "parity-gate/github-origin", "version": 1,
                           "repository": self.repository, "pr_number": self.pr_number,
                           "head_sha": self.head_sha, "event_name": self.event_name,
                           "run_id": self.run_id, "golden_sha": self.golden_sha}, indent=2) + "\n"

    @classmethod
    def from_context(cls, ctx: GitHubContext) -> "ResultOrigin":
        return cls(ctx.repository, ctx.pr_number, ctx.head_sha, ctx.event_name, ctx.run_id, ctx.golden_sha)

    @classmethod
    def read(cls, result_dir: Path) -> "ResultOrigin | None":
        path = Path(result_dir) / ORIGIN_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != "parity-gate/github-origin":
            raise BadInput(f"{path}: not a parity-gate github.json")
        pr = data.get("pr_number")
        sha = data.get("head_sha")
        if pr is not None and (not isinstance(pr, int) or isinstance(pr, bool) or pr <= 0):
            raise BadInput(f"{path}: pr_number must be a positive integer, got {pr!r}")
        golden = data.get("golden_sha")
        for key, value in (("head_sha", sha), ("golden_sha", golden)):
            if value is not None and not (isinstance(value, str) and _SHA.match(value)):
                raise BadInput(f"{path}: {key} must be 40 hex digits, got {value!r}")
        return cls(data.get("repository"), pr, sha, data.get("event_name"), data.get("run_id"), golden)


def read_event(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"GITHUB_EVENT_PATH={path}: cannot read the event payload ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _pr_of(payload: Mapping[str, Any]) -> tuple[int | None, str | None]:
    pr = payload.get("pull_request") or {}
    head = pr.get("head") or {}
    return pr.get("number") or payload.get("number"), head.get("sha")


def _full_name(repo: Any) -> str | None:
    name = repo.get("full_name") if isinstance(repo, Mapping) else None
    return name if isinstance(name, str) and name else None


def _is_fork(head_repo: Any, base_repo: Any, repository: str | None) -> bool:
    """Fail closed: a head repository GitHub does not name (null, as it sends
    for a deleted fork, or missing) is a fork's, and so is one that differs
    from the base repository (the event's, else GITHUB_REPOSITORY)."""
    head, base = _full_name(head_repo), _full_name(base_repo) or repository
    return head is None or base is None or head != base


def _event_facts(event: str | None, payload: Mapping[str, Any], sha: str | None,
                 repository: str | None = None) -> dict[str, Any]:
    """PR number, head sha and fork flag for each event the gate runs on."""
    if event in ("pull_request", "pull_request_target", "pull_request_review"):
        number, head_sha = _pr_of(payload)
        pr = payload.get("pull_request") or {}
        return {"pr_number": number, "head_sha": head_sha or sha,
                "from_fork": _is_fork((pr.get("head") or {}).get("repo"), (pr.get("base") or {}).get("repo"),
                                      repository)}
    if event == "workflow_run":
        run = payload.get("workflow_run") or {}
        prs = run.get("pull_requests") or []  # empty for fork PRs: github.json fills in
        return {"pr_number": prs[0].get("number") if len(prs) == 1 else None,
                "head_sha": run.get("head_sha"), "triggering_run_id": run.get("id"),
                "triggering_run_attempt": run.get("run_attempt"),
                "triggering_event": run.get("event") if isinstance(run.get("event"), str) else None,
                "from_fork": _is_fork(run.get("head_repository"), run.get("repository"), repository)}
    if event == "merge_group":
        # A merge queue's temporary branch: the required check is read on
        # its head commit. There is no pull request to comment on.
        return {"head_sha": (payload.get("merge_group") or {}).get("head_sha") or sha}
    if event == "push":
        return {"head_sha": payload.get("after") or sha}
    # workflow_dispatch, schedule, ...: the commit the workflow runs on.
    return {"head_sha": sha}


def context_from_env(env: Mapping[str, str], *, token: str | None = None) -> GitHubContext:
    """Parse the Actions environment once. `token` overrides GITHUB_TOKEN
    (the action's `github-token` input)."""
    repository = env.get("GITHUB_REPOSITORY") or None
    if repository and not _REPO.match(repository):
        raise BadInput(f"GITHUB_REPOSITORY={repository!r} is not OWNER/NAME")
    event = env.get("GITHUB_EVENT_NAME") or None
    sha = env.get("GITHUB_SHA") or None
    facts = _event_facts(event, read_event(env.get("GITHUB_EVENT_PATH")), sha, repository)
    head_sha = facts.get("head_sha")
    if head_sha is not None and not (isinstance(head_sha, str) and _SHA.match(head_sha)):
        raise BadInput(f"event payload ({event}): head sha {head_sha!r} is not 40 hex digits")
    number = facts.get("pr_number")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        raise BadInput(f"event payload ({event}): PR number {number!r} is not an integer")
    golden_sha = env.get(GOLDEN_SHA_VARIABLE) or None
    if golden_sha is not None and not _SHA.match(golden_sha):
        raise BadInput(f"{GOLDEN_SHA_VARIABLE}={golden_sha!r} is not 40 hex digits")
    for key, name in (("triggering_run_id", "id"), ("triggering_run_attempt", "run_attempt")):
        value = facts.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise BadInput(f"event payload ({event}): workflow_run.{name} {value!r} is not a positive integer")
    return GitHubContext(
        repository=repository,
        event_name=event,
        api_url=(env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
        server_url=(env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/"),
        run_id=env.get("GITHUB_RUN_ID") or None,
        run_attempt=env.get("GITHUB_RUN_ATTEMPT") or None,
        sha=sha,
        head_sha=head_sha,
        pr_number=number,
        triggering_run_id=facts.get("triggering_run_id"),
        triggering_run_attempt=facts.get("triggering_run_attempt"),
        triggering_event=facts.get("triggering_event"),
        from_fork=bool(facts.get("from_fork")),
        golden_sha=golden_sha,
        output_path=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
        step_summary_path=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
        token=(token if token is not None else env.get("GITHUB_TOKEN")) or "",
    )
