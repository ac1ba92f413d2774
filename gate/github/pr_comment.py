"""What a `/parity-gate` PR comment asks and what the gate answers it
with: the command line parsed from the comment, the event it came in, the
plan the hosted job writes for the GPU job, the reply section of the sticky
comment, and the artifact unpacker. Pure: no GitHub calls (those are the
desk's, gate/github/pr_commands.py)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import zipfile
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from gate.core.errors import EXIT_PASS, BadInput
from gate.core.fsutil import atomic_write_text
from gate.github.outcome import COMMENT_LIMIT
from gate.report.markdown import md_inline

__all__ = ["Command", "CommentEvent", "Plan", "Options", "Refusal", "COMMANDS", "WRITE_ROLES", "PLAN_FILE",
           "parse_command", "comment_event", "with_reply", "git_blob_sha", "unpack_artifact"]

PREFIX = "/parity-gate"
COMMANDS = {
    "accept": "re-record the golden on the vLLM this PR pins and commit it to the PR branch",
    "diagnose": "rerun the ablations of the failing check and name the knob that restores parity",
    "bisect": "name the first vLLM release between the golden's and this PR's that moves the verdict",
}
WRITE_ROLES = ("admin", "maintain", "write")
PLAN_FILE = "plan.json"
PLAN_SCHEMA = "parity-gate/pr-command"
RESULT_ARTIFACT = "parity-gate-result"
REPLY_BEGIN = "<!-- parity-gate-reply:begin -->"
REPLY_END = "<!-- parity-gate-reply:end -->"
REPLY_LIMIT = 6000                     # characters of one reply: the report keeps the rest
ARTIFACT_LIMIT = 1 << 30                # bytes of a result artifact's zip, and of what it unpacks to
FILE_LIMIT = 50 << 20                   # bytes of one golden file committed through the contents API
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,40}$")
_COMMAND_LINE = re.compile(r"^/parity-gate(?:[ \t]+(?P<rest>.*))?$")
_FENCE = re.compile(r"^(```|~~~)")


# ---------------------------------------------------------------- parsing (pure)
@dataclass(frozen=True)
class Command:
    name: str                  # "accept", "diagnose", "bisect", or what was written ("" for none)
    args: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.name in COMMANDS and not self.args


def parse_command(body: str) -> Command | None:
    """The first line that starts with `/parity-gate` (outside code blocks
    and quotes: a quoted or pasted command runs nothing), or None when the
    comment holds no command."""
    fenced = False
    for raw in (body or "").splitlines():
        line = raw.strip()
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or line.startswith(">"):
            continue
        m = _COMMAND_LINE.match(line)
        if m:
            words = (m["rest"] or "").split()
            return Command(words[0].lower() if words else "", tuple(words[1:]))
    return None


@dataclass(frozen=True)
class CommentEvent:
    """The facts of an `issue_comment` event the commands act on."""

    action: str
    comment_id: int
    body: str
    author: str
    author_is_bot: bool
    number: int
    on_pull_request: bool


def comment_event(event_name: str | None, payload: Mapping[str, Any], where: str) -> CommentEvent:
    hint = "run 'parity-gate pr-command plan' from a workflow on issue_comment (examples/workflows/pr-commands.yml)"
    if event_name != "issue_comment":
        raise BadInput(f"GITHUB_EVENT_NAME={event_name or '(unset)'}: pr-command reads an issue_comment event", hint)
    comment, issue = payload.get("comment"), payload.get("issue")
    if not isinstance(comment, Mapping) or not isinstance(issue, Mapping):
        raise BadInput(f"{where}: not an issue_comment payload (no 'comment' or 'issue')", hint)
    user = comment.get("user") if isinstance(comment.get("user"), Mapping) else {}
    cid, number, login = comment.get("id"), issue.get("number"), user.get("login")
    for name, value in (("comment.id", cid), ("issue.number", number)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BadInput(f"{where}: {name} must be a positive integer, got {value!r}", hint)
    if not isinstance(login, str) or not login:
        raise BadInput(f"{where}: comment.user.login is missing", hint)
    return CommentEvent(str(payload.get("action") or ""), cid, str(comment.get("body") or ""), login,
                        user.get("type") == "Bot" or login.endswith("[bot]"), number,
                        isinstance(issue.get("pull_request"), Mapping))


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """What `plan` decided, for the GPU job and for `answer` (PLAN_DIR/plan.json,
    written by the hosted plan job: the GPU job never writes it)."""

    command: str
    repository: str
    pr_number: int
    comment_id: int
    commenter: str
    head_sha: str
    head_ref: str
    fork: bool
    gate_run_id: int
    gate_run_url: str
    headline: str                  # the failing check's headline, as the verdict said it
    golden_release: str | None
    run_release: str | None
    status_context: str
    golden_path: str
    suite_path: str
    schema: str = field(default=PLAN_SCHEMA)

    def write(self, folder: Path) -> None:
        atomic_write_text(Path(folder) / PLAN_FILE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "Plan":
        path = Path(folder) / PLAN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema") != PLAN_SCHEMA:
                raise ValueError("not a parity-gate pr-command plan")
            return cls(**data)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise BadInput(f"{path}: cannot read the plan ({exc})",
                           "pass --plan the folder 'parity-gate pr-command plan --out' wrote") from None


@dataclass(frozen=True)
class Options:
    status_context: str = "parity-gate"
    golden_path: str = "parity/golden"
    suite_path: str = "parity/suite.yaml"
    artifact_name: str = RESULT_ARTIFACT
    comment_author: str | None = None


class Refusal(Exception):
    """A command that will not run, or did not work: the reply says why and
    what to do; `exit_code` is the step's (3 when something failed)."""

    def __init__(self, reply: str, exit_code: int = EXIT_PASS) -> None:
        super().__init__(reply)
        self.reply = reply
        self.exit_code = exit_code


def with_reply(body: str | None, marker: str, reply: str) -> str:
    """The sticky comment's body with `reply` as its last section (an older
    reply replaced), within GitHub's 65,536 characters: the report above it
    is cut to fit, never the reply."""
    section = f"{REPLY_BEGIN}\n---\n\n{reply.strip()}\n{REPLY_END}\n"
    base = body or f"{marker}\n## parity-gate\n"
    start = base.find(REPLY_BEGIN)
    if start >= 0:
        end = base.find(REPLY_END, start)
        base = base[:start] + (base[end + len(REPLY_END):] if end >= 0 else "")
    base = base.rstrip("\n") + "\n\n"
    if len(base) + len(section) > COMMENT_LIMIT:
        note = "\n\n*(report cut to make room for the reply below; the full report is in the workflow run)*\n\n"
        base = base[: COMMENT_LIMIT - len(section) - len(note)] + note
    if marker not in base:
        base = f"{marker}\n{base}"
    return (base + section)[:COMMENT_LIMIT]


def git_blob_sha(data: bytes) -> str:
    """The blob sha git and the contents API give these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def code_span(text: str) -> str:
    return "`" + md_inline(text, 80).replace("`", "") + "`"


def who(login: str) -> str:
    return "@" + md_inline(login, 60)


def usage() -> str:
    return "\n".join(f"- `{PREFIX} {name}`: {what}" for name, what in COMMANDS.items())


def unpack_artifact(data: bytes, dest: Path) -> None:
    """An artifact's zip into `dest`: regular files only, relative paths
    that stay inside, at most ARTIFACT_LIMIT bytes unpacked."""
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise Refusal(f"The result artifact is not a zip archive ({exc})") from None
    total = 0
    for info in members:
        name = PurePosixPath(info.filename)
        mode = info.external_attr >> 16
        if info.is_dir():
            continue
        leaves = name.is_absolute() or ".." in name.parts or "\\" in info.filename
        if leaves or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise Refusal(f"The result artifact holds {md_inline(info.filename, 80)!s}, which is not a plain "
                          "relative file; it is not used")
        total += info.file_size
        if total > ARTIFACT_LIMIT:
            raise Refusal(f"The result artifact unpacks to more than {ARTIFACT_LIMIT} bytes; it is not used")
        target = dest.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "xb") as out:
            shutil.copyfileobj(src, out)


