"""The pure parts of the PR-comment commands (gate/github/pr_comment.py): the command line of a
comment, the reply section of the sticky comment, the artifact unpacker, and
bisect's release pair."""
from __future__ import annotations

import io
import stat
import zipfile

import pytest

from gate.github.outcome import COMMENT_LIMIT, comment_marker
from gate.github.pr_comment import (
    REPLY_BEGIN,
    Command,
    Refusal,
    git_blob_sha,
    parse_command,
    unpack_artifact,
    with_reply,
)
from gate.studies.releases import release_pair

MARKER = comment_marker("parity-gate")


@pytest.mark.parametrize("body, expect", [
    ("/parity-gate accept", Command("accept")),
    ("  /parity-gate   Diagnose  ", Command("diagnose")),
    ("thanks!\n/parity-gate bisect\n/parity-gate accept", Command("bisect")),  # the first one
    ("/parity-gate accept now", Command("accept", ("now",))),
    ("/parity-gate", Command("")),
    ("/parity-gate-accept", None),
    ("please /parity-gate accept", None),
    ("> /parity-gate accept", None),
    ("```\n/parity-gate accept\n```\nthat is how", None),
    ("~~~\n/parity-gate accept\n~~~\n/parity-gate diagnose", Command("diagnose")),
    ("comment `/parity-gate accept` to accept", None),  # the gate's own instructions run nothing
    ("", None),
])
def test_parse_command__first_command_line_outside_quotes_and_code(body, expect):
    assert parse_command(body) == expect


def test_parse_command__known_only_without_arguments():
    assert Command("accept").known and not Command("accept", ("x",)).known and not Command("frob").known


def test_with_reply__replaces_the_previous_reply_and_keeps_the_report():
    report = f"{MARKER}\n## parity-gate: FAIL\nreport body\n"
    once = with_reply(report, MARKER, "first answer")
    twice = with_reply(once, MARKER, "second answer")
    assert "report body" in twice and "second answer" in twice and "first answer" not in twice
    assert twice.count(REPLY_BEGIN) == 1 and twice.count("---") == 1


def test_with_reply__no_comment_yet_gets_the_marker():
    body = with_reply(None, MARKER, "answer")
    assert body.startswith(MARKER) and body.rstrip().endswith("<!-- parity-gate-reply:end -->")


def test_with_reply__cuts_the_report_never_the_reply():
    body = with_reply(MARKER + "\n" + "r" * COMMENT_LIMIT, MARKER, "the answer " * 300)
    assert len(body) <= COMMENT_LIMIT and body.startswith(MARKER)
    assert ("the answer " * 300).strip() in body and "report cut" in body


def test_git_blob_sha__is_gits():
    assert git_blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info, data in entries:
            z.writestr(info, data)
    return buf.getvalue()


def test_unpack__plain_files_in_folders(tmp_path):
    unpack_artifact(_zip([("verdict.json", b"{}"), ("diagnosis/logs/a.log", b"x")]), tmp_path)
    assert (tmp_path / "verdict.json").read_bytes() == b"{}" and (tmp_path / "diagnosis/logs/a.log").is_file()


@pytest.mark.parametrize("name", ["../up.txt", "/abs.txt", "a\\..\\b.txt", "ok/../../up.txt"])
def test_unpack__refuses_paths_that_leave(tmp_path, name):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Refusal, match="not a plain relative file"):
        unpack_artifact(_zip([(name, b"x")]), dest)
    assert [p.name for p in tmp_path.rglob("*")] == ["dest"]


def test_unpack__refuses_a_symlink(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(Refusal, match="not a plain relative file"):
        unpack_artifact(_zip([(info, b"/etc/passwd")]), tmp_path)
    assert not (tmp_path / "link").exists()


def test_unpack__refuses_what_is_not_a_zip(tmp_path):
    with pytest.raises(Refusal, match="not a zip archive"):
        unpack_artifact(b"<html>proxy</html>", tmp_path)


def _verdict(good: object, bad: object) -> dict:
    return {"reference": {"manifest": {"vllm_version": good}}, "candidate": {"manifest": {"vllm_version": bad}}}


@pytest.mark.parametrize("good, bad, why", [
    ("0.32.0", "0.33.0", ""),
    ("0.32.0", "0.32.0", "both ran on 0.32.0"),
    ("0.33.0", "0.32.0", "older than the golden's 0.33.0"),
    (None, "0.33.0", "the golden names no engine release"),
    ("0.32.0", "0.33; rm -rf /", "the release under test names no engine release"),
    ("0.32.0", "banana", "the release under test names no engine release"),
])
def test_release_pair__from_the_manifests(good, bad, why):
    g, b, reason = release_pair(_verdict(good, bad))
    assert (reason == "") if not why else (why in reason)
    if not why:
        assert (g, b) == (good, bad)
