"""A fake GitHub REST API: a real threaded HTTP server on loopback.

Implements what the gate calls (issue comments with Link pagination, create,
update; commit statuses and the combined status; check runs: create, list
for a commit, update; one pull request; GET /user; the GraphQL `viewer`;
for the PR-comment commands: a collaborator's permission, reactions on an
issue comment, a workflow run's artifacts and their zip download (a 302 to
a blob URL outside the API, as GitHub answers), and files on a branch
through the contents API: GET with `ref`, PUT with `sha`, each PUT one
commit that moves the branch),
records every request, and injects faults (5xx, 429/403 with retry-after,
403 forbidden, slow responses, a non-JSON body, a chunked body cut short, a
connection closed without an answer, a lost answer after acting) by method
and path.

It refuses what GitHub refuses, so the client's tests meet GitHub's answers:
422 for a comment body over 65,536 characters, a status with an unknown
state, a description over 140 characters, or a commit the repository does
not have (statuses and check runs); 404 for an unknown repository, issue,
pull request or comment, an unknown user, artifact, branch or file; 403 for
a write the token's permissions lack (`checks` for check runs, `contents`
for a file; a personal access token never creates check runs); 409 for a
file PUT whose `sha` is not the branch's, 422 for one without `sha` over an
existing file, without a message, or with content that is not base64; 410
for an expired artifact.
Known by default: the repositories in DEFAULT_REPOS, each with the commits
`0`*40 ... `f`*40 and issues 1..99; add more with `add_repo`, `add_commit`,
`add_pull`, `add_branch`, `add_artifact`, `set_permission`.

Each token has an identity and a permission set, as on GitHub: by default an
installation token (GITHUB_TOKEN), which GET /user refuses with 403
"Resource not accessible by integration" and whose comments are by
github-actions[bot]; with `app_slug="my-app"` a GitHub App's installation
token (comments by my-app[bot]; GET /user refuses it the same way; the
GraphQL `viewer` names it); with `login="octocat"` a personal access token of
that user. `add_token` adds more tokens, `grant` changes what one may write.
Comments carry their author; like a token with write access on GitHub, any
comment can be PATCHed, whoever wrote it.

    with FakeGitHub(token="t0ken") as gh:
        gh.add_comments("o/r", 7, ["hello"] * 120)  # by "someone"
        gh.fail("GET", r"/comments", status=502, times=2)
        ... GITHUB_API_URL=gh.url ...
        gh.requests  # [Recorded(method, path, query, headers, body), ...]
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["FakeGitHub", "Fault", "Recorded", "TokenInfo", "ACTIONS_BOT", "ALL_WRITE", "DEFAULT_REPOS",
           "COMMENT_LIMIT", "ROLES", "REACTIONS", "git_blob_sha"]

ACTIONS_BOT = "github-actions[bot]"
# What GITHUB_TOKEN may write with `statuses: write`, `pull-requests: write`,
# `issues: write`, `checks: write` and `contents: write`.
ALL_WRITE = frozenset({"statuses", "pull_requests", "issues", "checks", "contents"})
# A collaborator's role, and the legacy `permission` GitHub sends beside it.
ROLES = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read", "none": "none"}
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
DEFAULT_REPOS = ("octo/gate", "o/r")
DEFAULT_COMMITS = tuple(c * 40 for c in "0123456789abcdef")
DEFAULT_ISSUES = range(1, 100)
COMMENT_LIMIT = 65536            # characters of an issue comment body
CHECK_TEXT_LIMIT = 65535         # characters of a check run's output.summary and output.text
DESCRIPTION_LIMIT = 140          # characters of a status description
STATUS_STATES = ("error", "failure", "pending", "success")
CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale",
                     "timed_out")
_INTEGRATION = "Resource not accessible by integration"
_PAT = "Resource not accessible by personal access token"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]   # lower-case names
    body: Any                 # parsed JSON or None
    status: int


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = field(default_factory=lambda: {"message": "Server Error"})
    delay_s: float = 0.0
    times: int = 1            # how many matching requests it answers; -1: forever
    after: bool = False       # act on the request first, then answer with the fault (a lost response)
    raw: bytes | None = None  # send these bytes as the body (text/html), not JSON
    cut: bool = False         # a chunked body that ends before its last chunk
    drop: bool = False        # close the connection without any answer
    skip: int = 0             # let this many matching requests through first


@dataclass
class TokenInfo:
    """Who a token is and what it may write."""

    login: str | None = None          # a personal access token of this user
    app_slug: str | None = None       # a GitHub App's installation token (None: GITHUB_TOKEN)
    permissions: frozenset[str] = ALL_WRITE

    @property
    def author(self) -> dict[str, str]:
        if self.login is not None:
            return {"login": self.login, "type": "User"}
        return {"login": f"{self.app_slug}[bot]" if self.app_slug else ACTIONS_BOT, "type": "Bot"}


class _Raw:
    def __init__(self, data: bytes, cut: bool = False, drop: bool = False,
                 ctype: str = "text/html; charset=utf-8") -> None:
        self.data, self.cut, self.drop, self.ctype = data, cut, drop, ctype


def _validation(message: str, resource: str, field_name: str) -> dict[str, Any]:
    return {"message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "field": field_name, "message": message}],
            "documentation_url": "https://docs.github.com/rest"}


def git_blob_sha(data: bytes) -> str:
    """The sha git (and GitHub's contents API) gives a file's bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeGitHub:
    def __init__(self, token: str | None = "fake-token", prefix: str = "", read_only: bool = False,
                 per_page_default: int = 30, max_per_page: int = 100, login: str | None = None,
                 app_slug: str | None = None, permissions: Iterable[str] | None = None) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")        # "/api/v3" behaves like GitHub Enterprise Server
        self.read_only = read_only              # every write gets 403, like a fork PR's token
        self.per_page_default = per_page_default
        self.max_per_page = max_per_page
        if permissions is None:
            permissions = ALL_WRITE - ({"checks"} if login is not None else set())
        self.tokens: dict[str | None, TokenInfo] = {
            token: TokenInfo(login=login, app_slug=app_slug, permissions=frozenset(permissions))}
        self.requests: list[Recorded] = []
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.check_runs: list[dict[str, Any]] = []
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.commits: dict[str, set[str]] = {}
        self.issues: dict[str, set[int]] = {}
        self.roles: dict[tuple[str, str], str] = {}       # (repo, login) -> role
        self.users: set[str] = {"someone", "octocat", ACTIONS_BOT}
        self.reactions: list[dict[str, Any]] = []
        self.branches: dict[tuple[str, str], str] = {}    # (repo, branch) -> head sha
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, branch) -> path -> bytes
        self.file_commits: list[dict[str, Any]] = []      # every PUT that made a commit
        self.artifacts: dict[int, dict[str, Any]] = {}
        for repo in DEFAULT_REPOS:
            self.add_repo(repo, DEFAULT_COMMITS, DEFAULT_ISSUES)
        self._faults: list[Fault] = []
        self._next_links: list[tuple[re.Pattern[str], str | None]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "FakeGitHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The API base URL (GITHUB_API_URL)."""
        return self.host + self.prefix

    # --- identities --------------------------------------------------------
    @property
    def login(self) -> str | None:
        return self.tokens[self.token].login

    @property
    def author(self) -> dict[str, str]:
        """Who the main token writes as."""
        return self.tokens[self.token].author

    def add_token(self, token: str, *, login: str | None = None, app_slug: str | None = None,
                  permissions: Iterable[str] | None = None) -> None:
        if permissions is None:
            permissions = ALL_WRITE - ({"checks"} if login is not None else set())
        self.tokens[token] = TokenInfo(login, app_slug, frozenset(permissions))

    def grant(self, permissions: Iterable[str], token: str | None = None) -> None:
        """What `token` (default: the main one) may write from now on."""
        key = self.token if token is None else token
        self.tokens[key].permissions = frozenset(permissions)

    # --- state -------------------------------------------------------------
    def add_repo(self, repo: str, commits: Iterable[str] = (), issues: Iterable[int] = ()) -> None:
        self.commits.setdefault(repo, set()).update(commits)
        self.issues.setdefault(repo, set()).update(issues)

    def add_commit(self, repo: str, sha: str) -> None:
        self.add_repo(repo, [sha])

    def add_comments(self, repo: str, number: int, bodies: list[str], login: str = "someone") -> list[int]:
        self.add_repo(repo, issues=[number])
        with self._lock:
            items = self.comments.setdefault((repo, number), [])
            ids = []
            for body in bodies:
                cid = next(self._ids)
                items.append({"id": cid, "body": body, "user": {"login": login, "type": "User"}})
                ids.append(cid)
            return ids

    def add_pull(self, repo: str, number: int, head_sha: str, *, head_repo: str | None = "",
                 head_ref: str = "bump-vllm", base_ref: str = "main", user: str = "someone") -> None:
        """A pull request. `head_repo` "" is the repository itself (its branch
        `head_ref` is created at `head_sha`); a fork's "owner/name"; None is
        what GitHub sends for a deleted fork."""
        self.add_repo(repo, [head_sha], [number])
        head = {"sha": head_sha, "ref": head_ref,
                "repo": None if head_repo is None else {"full_name": head_repo or repo}}
        self.pulls[(repo, number)] = {"number": number, "head": head, "user": {"login": user, "type": "User"},
                                      "base": {"ref": base_ref, "repo": {"full_name": repo}}}
        if head_repo == "" and (repo, head_ref) not in self.branches:
            self.add_branch(repo, head_ref, head_sha)

    def add_branch(self, repo: str, branch: str, sha: str, files: dict[str, bytes] | None = None) -> None:
        self.add_repo(repo, [sha])
        self.branches[(repo, branch)] = sha
        self.files.setdefault((repo, branch), {}).update(files or {})

    def set_permission(self, repo: str, login: str, role: str) -> None:
        """`login`'s role on `repo` (admin, maintain, write, triage, read, none)."""
        assert role in ROLES, role
        self.users.add(login)
        self.roles[(repo, login)] = role

    def add_user(self, login: str) -> None:
        """A GitHub user with no role on any repository (a stranger)."""
        self.users.add(login)

    def add_artifact(self, repo: str, run_id: int, name: str, files: dict[str, bytes], *,
                     expired: bool = False) -> int:
        """A workflow run's artifact: `files` zipped, as upload-artifact stores them."""
        self.add_repo(repo)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path, data in files.items():
                z.writestr(path, data)
        aid = next(self._ids)
        self.artifacts[aid] = {"id": aid, "name": name, "repo": repo, "run_id": run_id, "expired": expired,
                               "size_in_bytes": len(buf.getvalue()), "zip": buf.getvalue()}
        return aid

    def add_artifact_zip(self, repo: str, run_id: int, name: str, data: bytes) -> int:
        """An artifact whose zip is these bytes exactly (a hostile one)."""
        aid = self.add_artifact(repo, run_id, name, {})
        self.artifacts[aid].update(zip=data, size_in_bytes=len(data))
        return aid

    def file_at(self, repo: str, branch: str, path: str) -> bytes | None:
        return self.files.get((repo, branch), {}).get(path)

    def fail(self, method: str, path_regex: str, status: int = 502, *, times: int = 1,
             headers: dict[str, str] | None = None, body: Any = None, delay_s: float = 0.0,
             after: bool = False, raw: bytes | None = None, cut: bool = False, drop: bool = False,
             skip: int = 0) -> None:
        self._faults.append(Fault(method.upper(), re.compile(path_regex), status, headers or {},
                                  body if body is not None else {"message": f"injected {status}"},
                                  delay_s, times, after, raw, cut, drop, skip))

    def secondary_rate_limit(self, method: str, path_regex: str, retry_after: str = "1", *,
                             times: int = 1) -> None:
        """GitHub's answer to too many requests in a short time."""
        self.fail(method, path_regex, 403, times=times, headers={"Retry-After": retry_after},
                  body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes "
                                   "before you try again.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"})

    def abuse_next_link(self, path_regex: str, url: str | None = None) -> None:
        """List answers on matching paths name `url` as rel="next" (None:
        the page just served, a loop), as a hostile proxy or a bug might."""
        self._next_links.append((re.compile(path_regex), url))

    def requests_to(self, method: str, path_regex: str) -> list[Recorded]:
        rx = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # --- request handling (called from server threads) ----------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times != 0 and fault.method == method and fault.path.search(path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:
        fault = self._take_fault(method, path)
        if fault is None:
            return self._handle(method, path, query, headers, body)
        if fault.after:
            self._handle(method, path, query, headers, body)  # GitHub acted; the answer is lost
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.drop:
            return 0, {}, _Raw(b"", drop=True)
        if fault.raw is not None or fault.cut:
            return fault.status or 200, dict(fault.headers), _Raw(fault.raw or b'{"id": 1, "bo', cut=fault.cut)
        if fault.status or fault.after:  # status 0: a slow answer, otherwise normal
            return fault.status, dict(fault.headers), fault.body
        return self._handle(method, path, query, headers, body)

    def _handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                body: Any) -> tuple[int, dict[str, str], Any]:
        if mm := re.fullmatch(r"/_blob/artifacts/(\d+)\.zip", path):
            # The signed blob URL GET .../zip redirects to: no token needed (or wanted).
            art = self.artifacts.get(int(mm[1]))
            if art is None or method != "GET":
                return 404, {}, _Raw(b"BlobNotFound")
            return 200, {"Content-Type": "application/zip"}, _Raw(art["zip"], ctype="application/zip")
        if self.prefix:
            if path == "/api/graphql" and self.prefix == "/api/v3":
                path = "/graphql"  # GitHub Enterprise Server: GraphQL beside /api/v3, not under it
            elif not path.startswith(self.prefix + "/"):
                return 404, {}, {"message": "Not Found (no API prefix)"}
            else:
                path = path[len(self.prefix):]
        if self.token is None:
            who = self.tokens[None]
        else:
            auth = headers.get("authorization", "")
            who = self.tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
            if who is None:
                return 401, {}, {"message": "Bad credentials"}
        if path == "/graphql" and method == "POST":
            return self._graphql(who, body)
        if self.read_only and method in ("POST", "PATCH", "PUT", "DELETE"):
            return 403, {}, {"message": _INTEGRATION}
        return self._route(who, method, path, query, body)

    def _graphql(self, who: TokenInfo, body: Any) -> tuple[int, dict[str, str], Any]:
        query = (body or {}).get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not re.search(r"\bviewer\s*\{[^}]*\blogin\b", query):
            return 200, {}, {"errors": [{"message": "fake GitHub: only { viewer { login } } is implemented"}]}
        return 200, {}, {"data": {"viewer": {"login": who.author["login"]}}}

    def _denied(self, who: TokenInfo, permission: str) -> tuple[int, dict[str, str], Any] | None:
        if permission in who.permissions:
            return None
        message = _PAT if who.login is not None else _INTEGRATION
        return 403, {}, {"message": message, "documentation_url": "https://docs.github.com/rest"}

    def _route(self, who: TokenInfo, method: str, path: str, query: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:
        not_found = (404, {}, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if path == "/user" and method == "GET":
            if who.login is None:
                return 403, {}, {"message": _INTEGRATION, "documentation_url": "https://docs.github.com/rest/users/users"}
            return 200, {}, {"login": who.login, "id": 1, "type": "User"}
        if path == "/app" and method == "GET":
            # GitHub documents a JWT (the App's own key) for this: no token works.
            return 401, {}, {"message": "A JSON web token could not be decoded",
                             "documentation_url": "https://docs.github.com/rest"}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)", path)
        if not m:
            return 404, {}, {"message": f"fake GitHub: no route for {method} {path}"}
        repo, rest = m[1], m[2]
        if repo not in self.commits:
            return not_found
        commits, issues = self.commits[repo], self.issues[repo]

        if mm := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(mm[1])
            if number not in issues:
                return not_found
            key = (repo, number)
            if method == "GET":
                return self._page(path, query, self.comments.get(key, []))
            if method == "POST":
                if denied := self._denied(who, "issues") and self._denied(who, "pull_requests"):
                    return denied
                if bad := self._bad_comment(body):
                    return bad
                with self._lock:
                    item = {"id": next(self._ids), "body": body["body"], "user": dict(who.author)}
                    self.comments.setdefault(key, []).append(item)
                return 201, {}, item
        if (mm := re.fullmatch(r"/issues/comments/(\d+)", rest)) and method == "PATCH":
            if denied := self._denied(who, "issues") and self._denied(who, "pull_requests"):
                return denied
            for (item_repo, _), items in self.comments.items():
                for item in items:
                    if item["id"] == int(mm[1]) and item_repo == repo:
                        if bad := self._bad_comment(body):
                            return bad
                        item["body"] = body["body"]
                        return 200, {}, item
            return not_found
        if (mm := re.fullmatch(r"/statuses/([^/]+)", rest)) and method == "POST":
            if denied := self._denied(who, "statuses"):
                return denied
            if not isinstance(body, dict):
                return 400, {}, {"message": "Problems parsing JSON"}
            if body.get("state") not in STATUS_STATES:
                return 422, {}, _validation(f"state is not included in the list ({body.get('state')!r})",
                                            "Status", "state")
            if len(body.get("description") or "") > DESCRIPTION_LIMIT:
                return 422, {}, {"message": "description is too long (maximum is 140 characters)"}
            if mm[1] not in commits:
                return 422, {}, {"message": f"No commit found for SHA: {mm[1]}"}
            item = {"sha": mm[1], **body}
            with self._lock:
                self.statuses.append(item)
            return 201, {}, item
        if (mm := re.fullmatch(r"/commits/([^/]+)/status", rest)) and method == "GET":
            if mm[1] not in commits:
                return 422, {}, {"message": f"No commit found for SHA: {mm[1]}"}
            latest: dict[str, dict[str, Any]] = {}
            for item in self.statuses:
                if item["sha"] == mm[1]:
                    latest[item.get("context") or "default"] = item
            states = [s["state"] for s in latest.values()]
            state = ("failure" if {"failure", "error"} & set(states) else
                     "pending" if not states or "pending" in states else "success")
            return 200, {}, {"sha": mm[1], "state": state, "total_count": len(latest),
                             "statuses": list(reversed(list(latest.values())))}
        if rest == "/check-runs" and method == "POST":
            if denied := self._denied(who, "checks"):
                return denied
            if bad := self._bad_check_run(body, commits, creating=True):
                return bad
            with self._lock:
                item = {"id": next(self._ids), "app": {"slug": who.app_slug or "github-actions"}, **body}
                self.check_runs.append(item)
            return 201, {}, item
        if (mm := re.fullmatch(r"/check-runs/(\d+)", rest)) and method == "PATCH":
            if denied := self._denied(who, "checks"):
                return denied
            if bad := self._bad_check_run(body, commits, creating=False):
                return bad
            for item in self.check_runs:
                if item["id"] == int(mm[1]):
                    item.update({k: v for k, v in body.items() if k != "head_sha"})
                    return 200, {}, item
            return not_found
        if (mm := re.fullmatch(r"/commits/([^/]+)/check-runs", rest)) and method == "GET":
            if mm[1] not in commits:
                return 422, {}, {"message": f"No commit found for SHA: {mm[1]}"}
            runs = [r for r in self.check_runs if r.get("head_sha") == mm[1]
                    and ("check_name" not in query or r.get("name") == query["check_name"])]
            status, headers, page = self._page(path, query, runs)
            return status, headers, {"total_count": len(runs), "check_runs": page}
        if (mm := re.fullmatch(r"/pulls/(\d+)", rest)) and method == "GET":
            pull = self.pulls.get((repo, int(mm[1])))
            if pull is None:
                return not_found
            head = pull["head"]
            if (head.get("repo") or {}).get("full_name") == repo and (repo, head["ref"]) in self.branches:
                head["sha"] = self.branches[(repo, head["ref"])]  # a push to the branch moves the PR
            return 200, {}, pull
        if (mm := re.fullmatch(r"/collaborators/([^/]+)/permission", rest)) and method == "GET":
            login = mm[1]
            if login not in self.users:
                return not_found
            role = self.roles.get((repo, login), "read")  # anyone may read a public repository
            return 200, {}, {"permission": ROLES[role], "role_name": role,
                             "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"}}
        if (mm := re.fullmatch(r"/issues/comments/(\d+)/reactions", rest)) and method == "POST":
            if denied := self._denied(who, "issues") and self._denied(who, "pull_requests"):
                return denied
            if not any(item["id"] == int(mm[1]) for (item_repo, _), items in self.comments.items()
                       if item_repo == repo for item in items):
                return not_found
            content = body.get("content") if isinstance(body, dict) else None
            if content not in REACTIONS:
                return 422, {}, _validation(f"content is not included in the list ({content!r})", "Reaction",
                                            "content")
            user = who.author["login"]
            with self._lock:
                for r in self.reactions:
                    if (r["comment_id"], r["content"], r["user"]["login"]) == (int(mm[1]), content, user):
                        return 200, {}, r  # the same reaction again: GitHub answers 200 with the old one
                item = {"id": next(self._ids), "comment_id": int(mm[1]), "content": content,
                        "user": dict(who.author)}
                self.reactions.append(item)
            return 201, {}, item
        if (mm := re.fullmatch(r"/actions/runs/(\d+)/artifacts", rest)) and method == "GET":
            items = [{k: a[k] for k in ("id", "name", "expired", "size_in_bytes")}
                     | {"archive_download_url": f"{self.url}/repos/{repo}/actions/artifacts/{a['id']}/zip",
                        "workflow_run": {"id": a["run_id"]}}
                     for a in self.artifacts.values() if a["repo"] == repo and a["run_id"] == int(mm[1])
                     and query.get("name") in (None, a["name"])]
            status, headers, page = self._page(path, query, items)
            return status, headers, {"total_count": len(items), "artifacts": page}
        if (mm := re.fullmatch(r"/actions/artifacts/(\d+)/zip", rest)) and method == "GET":
            art = self.artifacts.get(int(mm[1]))
            if art is None or art["repo"] != repo:
                return not_found
            if art["expired"]:
                return 410, {}, {"message": "Artifact has expired", "documentation_url": "https://docs.github.com/rest"}
            return 302, {"Location": f"{self.host}/_blob/artifacts/{art['id']}.zip"}, _Raw(b"")
        if (mm := re.fullmatch(r"/contents/(.+)", rest)) and method in ("GET", "PUT"):
            return self._contents(who, method, repo, mm[1], query, body)
        return 404, {}, {"message": f"fake GitHub: no route for {method} {path}"}

    def _contents(self, who: TokenInfo, method: str, repo: str, path: str, query: dict[str, str],
                  body: Any) -> tuple[int, dict[str, str], Any]:
        not_found = (404, {}, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if method == "GET":
            branch = query.get("ref", "main")
            data = self.files.get((repo, branch), {}).get(path)
            if data is None:
                return not_found
            return 200, {}, {"type": "file", "path": path, "name": path.rsplit("/", 1)[-1], "size": len(data),
                             "sha": git_blob_sha(data), "encoding": "base64" if len(data) <= 1 << 20 else "none",
                             "content": base64.b64encode(data).decode() if len(data) <= 1 << 20 else ""}
        if denied := self._denied(who, "contents"):
            return denied
        if not isinstance(body, dict):
            return 400, {}, {"message": "Problems parsing JSON"}
        if not (isinstance(body.get("message"), str) and body["message"]):
            return 422, {}, _validation("message wasn't supplied", "Commit", "message")
        try:
            data = base64.b64decode(body.get("content") or "", validate=True) if isinstance(body.get("content"), str) \
                else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            return 422, {}, {"message": "content is not valid Base64"}
        branch = body.get("branch") or "main"
        with self._lock:
            if (repo, branch) not in self.branches:
                return 404, {}, {"message": f"Branch {branch} not found"}
            files = self.files.setdefault((repo, branch), {})
            old = files.get(path)
            if old is not None and "sha" not in body:
                return 422, {}, {"message": 'Invalid request.\n\n"sha" wasn\'t supplied.'}
            if body.get("sha") is not None and (old is None or body["sha"] != git_blob_sha(old)):
                return 409, {}, {"message": f"{path} does not match {body['sha']}"}
            files[path] = data
            sha = hashlib.sha1(f"{self.branches[(repo, branch)]}:{path}:{git_blob_sha(data)}".encode()).hexdigest()
            self.branches[(repo, branch)] = sha
            self.commits[repo].add(sha)
            commit = {"sha": sha, "message": body["message"], "branch": branch, "path": path,
                      "author": dict(who.author)}
            self.file_commits.append(commit)
        return (200 if old is not None else 201), {}, {
            "content": {"path": path, "sha": git_blob_sha(data), "size": len(data)},
            "commit": {"sha": sha, "message": body["message"]}}

    @staticmethod
    def _bad_comment(body: Any) -> tuple[int, dict[str, str], Any] | None:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return 422, {}, _validation("body wasn't supplied", "IssueComment", "body")
        if len(text) > COMMENT_LIMIT:
            return 422, {}, _validation(f"body is too long (maximum is {COMMENT_LIMIT} characters)",
                                        "IssueComment", "body")
        return None

    @staticmethod
    def _bad_check_run(body: Any, commits: set[str], creating: bool) -> tuple[int, dict[str, str], Any] | None:
        if not isinstance(body, dict):
            return 400, {}, {"message": "Problems parsing JSON"}
        if creating and not (isinstance(body.get("name"), str) and body["name"]):
            return 422, {}, _validation("name wasn't supplied", "CheckRun", "name")
        if creating and body.get("head_sha") not in commits:
            return 422, {}, {"message": f"No commit found for SHA: {body.get('head_sha')}"}
        if "status" in body and body["status"] not in CHECK_STATUSES:
            return 422, {}, _validation("status is not included in the list", "CheckRun", "status")
        if "conclusion" in body and body["conclusion"] not in CHECK_CONCLUSIONS:
            return 422, {}, _validation("conclusion is not included in the list", "CheckRun", "conclusion")
        if body.get("status") == "completed" and "conclusion" not in body:
            return 422, {}, _validation("conclusion wasn't supplied", "CheckRun", "conclusion")
        output = body.get("output")
        if output is not None:
            if not (isinstance(output, dict) and output.get("title") and output.get("summary")):
                return 422, {}, _validation("output needs a title and a summary", "CheckRun", "output")
            for key in ("summary", "text"):
                if len(output.get(key) or "") > CHECK_TEXT_LIMIT:
                    return 422, {}, _validation(f"output.{key} is too long (maximum is {CHECK_TEXT_LIMIT} "
                                                "characters)", "CheckRun", f"output.{key}")
        return None

    def _page(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        per_page = min(self.max_per_page, int(query.get("per_page", self.per_page_default)))
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.host}{self.prefix}{path}"
        links = []
        kept = {k: v for k, v in query.items() if k not in ("per_page", "page")}
        extra = "&" + urlencode(kept) if kept else ""
        abused = next(((url,) for rx, url in self._next_links if rx.search(path)), None)
        if abused is not None:
            url = abused[0] or f"{base}?per_page={per_page}&page={page}{extra}"
            links.append(f'<{url}>; rel="next"')
        elif page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}{extra}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}{extra}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page=1{extra}>; rel="first"')
            links.append(f'<{base}?per_page={per_page}&page={page - 1}{extra}>; rel="prev"')
        return 200, ({"Link": ", ".join(links)} if links else {}), [dict(i) for i in chunk]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out on a slow answer: expected, not noise


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGitHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.owner.handle(self.command, split.path, query, headers, body)
        with self.owner._lock:
            self.owner.requests.append(Recorded(self.command, split.path, query, headers, body, status))
        if isinstance(payload, _Raw) and payload.drop:
            self.close_connection = True  # no status line at all: the client sees the connection end
            return
        self.send_response(status)
        for k, v in out_headers.items():
            self.send_header(k, v)
        if isinstance(payload, _Raw) and payload.cut:
            # Chunked, and the connection closes before the last chunk.
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload.data) + 64, payload.data))
            self.wfile.flush()
            self.close_connection = True
            return
        data = payload.data if isinstance(payload, _Raw) else json.dumps(payload).encode()
        ctype = payload.ctype if isinstance(payload, _Raw) else "application/json; charset=utf-8"
        if "Content-Type" not in out_headers:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
