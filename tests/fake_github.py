"""A fake GitHub REST API: a real threaded HTTP server on loopback.

Implements what the gate calls (issue comments with Link pagination, create,
update; commit statuses; check runs; one pull request; GET /user), records
every request, and injects faults (5xx, 429/403 with retry-after, 403
forbidden, slow responses) by method and path.

The token has an identity, as on GitHub: by default an installation token
(GITHUB_TOKEN), which GET /user refuses with 403 "Resource not accessible by
integration" and whose comments are by github-actions[bot]; with
`login="octocat"` a personal access token of that user. Comments carry their
author; like a token with write access on GitHub, any comment can be PATCHed,
whoever wrote it.

    with FakeGitHub(token="t0ken") as gh:
        gh.add_comments("o/r", 7, ["hello"] * 120)  # by "someone"
        gh.fail("GET", r"/comments", status=502, times=2)
        ... GITHUB_API_URL=gh.url ...
        gh.requests  # [Recorded(method, path, query, headers, body), ...]
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeGitHub", "Fault", "Recorded", "ACTIONS_BOT"]

ACTIONS_BOT = "github-actions[bot]"


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


class FakeGitHub:
    def __init__(self, token: str | None = "fake-token", prefix: str = "", read_only: bool = False,
                 per_page_default: int = 30, max_per_page: int = 100, login: str | None = None) -> None:
        self.token = token
        self.login = login                      # None: an installation token (GITHUB_TOKEN)
        self.prefix = prefix.rstrip("/")        # "/api/v3" behaves like GitHub Enterprise Server
        self.read_only = read_only              # every write gets 403, like a fork PR's token
        self.per_page_default = per_page_default
        self.max_per_page = max_per_page
        self.requests: list[Recorded] = []
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.check_runs: list[dict[str, Any]] = []
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self._faults: list[Fault] = []
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

    # --- state -------------------------------------------------------------
    def add_comments(self, repo: str, number: int, bodies: list[str], login: str = "someone") -> list[int]:
        with self._lock:
            items = self.comments.setdefault((repo, number), [])
            ids = []
            for body in bodies:
                cid = next(self._ids)
                items.append({"id": cid, "body": body, "user": {"login": login, "type": "User"}})
                ids.append(cid)
            return ids

    @property
    def author(self) -> dict[str, str]:
        """Who the token writes as."""
        if self.login is None:
            return {"login": ACTIONS_BOT, "type": "Bot"}
        return {"login": self.login, "type": "User"}

    def add_pull(self, repo: str, number: int, head_sha: str) -> None:
        self.pulls[(repo, number)] = {"number": number, "head": {"sha": head_sha}}

    def fail(self, method: str, path_regex: str, status: int = 502, *, times: int = 1,
             headers: dict[str, str] | None = None, body: Any = None, delay_s: float = 0.0,
             after: bool = False) -> None:
        self._faults.append(Fault(method.upper(), re.compile(path_regex), status, headers or {},
                                  body if body is not None else {"message": f"injected {status}"},
                                  delay_s, times, after))

    def requests_to(self, method: str, path_regex: str) -> list[Recorded]:
        rx = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # --- request handling (called from server threads) ----------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times != 0 and fault.method == method and fault.path.search(path):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:
        fault = self._take_fault(method, path)
        if fault is not None and fault.after:
            self._handle(method, path, query, headers, body)
            return fault.status, dict(fault.headers), fault.body
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.status:  # status 0: a slow answer, otherwise normal
                return fault.status, dict(fault.headers), fault.body
        return self._handle(method, path, query, headers, body)

    def _handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                body: Any) -> tuple[int, dict[str, str], Any]:
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return 404, {}, {"message": "Not Found (no API prefix)"}
            path = path[len(self.prefix):]
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"message": "Bad credentials"}
        if self.read_only and method in ("POST", "PATCH", "PUT", "DELETE"):
            return 403, {}, {"message": "Resource not accessible by integration"}
        return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", path):
            key = (m[1], int(m[2]))
            if method == "GET":
                return self._page(path, query, self.comments.get(key, []))
            if method == "POST":
                with self._lock:
                    item = {"id": next(self._ids), "body": body["body"], "user": dict(self.author)}
                    self.comments.setdefault(key, []).append(item)
                return 201, {}, item
        if (m := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", path)) and method == "PATCH":
            for items in self.comments.values():
                for item in items:
                    if item["id"] == int(m[2]):
                        item["body"] = body["body"]
                        return 200, {}, item
            return 404, {}, {"message": "Not Found"}
        if (m := re.fullmatch(r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})", path)) and method == "POST":
            if len(body.get("description") or "") > 140:
                return 422, {}, {"message": "description is too long (maximum is 140 characters)"}
            item = {"sha": m[2], **body}
            self.statuses.append(item)
            return 201, {}, item
        if re.fullmatch(r"/repos/([^/]+/[^/]+)/check-runs", path) and method == "POST":
            item = {"id": next(self._ids), **body}
            self.check_runs.append(item)
            return 201, {}, item
        if path == "/user" and method == "GET":
            if self.login is None:
                return 403, {}, {"message": "Resource not accessible by integration",
                                 "documentation_url": "https://docs.github.com/rest/users/users"}
            return 200, {}, {"login": self.login, "id": 1, "type": "User"}
        if (m := re.fullmatch(r"/repos/([^/]+/[^/]+)/pulls/(\d+)", path)) and method == "GET":
            pull = self.pulls.get((m[1], int(m[2])))
            return (200, {}, pull) if pull else (404, {}, {"message": "Not Found"})
        return 404, {}, {"message": f"fake GitHub: no route for {method} {path}"}

    def _page(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        per_page = min(self.max_per_page, int(query.get("per_page", self.per_page_default)))
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.host}{self.prefix}{path}"
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
            links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
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
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in out_headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
