from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from gate.core.errors import BadInput
from gate.github.workflow_commands import (
    STEP_SUMMARY_LIMIT,
    annotation,
    append_step_summary,
    check_runner_file,
    emit_annotations,
    write_outputs,
)


def parse_outputs(text: str) -> dict[str, str]:
    """The runner's reading of GITHUB_OUTPUT."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:j])
            i = j + 1
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
            i += 1
        else:
            i += 1
    return out


def test_workflow_commands__outputs_multiline_with_random_delimiter(tmp_path):
    path = tmp_path / "out"
    hostile = "line1\nEOF\nverdict=pass\nghadelimiter_x"
    write_outputs(path, {"verdict": "fail", "headline": hostile})
    write_outputs(path, {"exit-code": "1"})
    text = path.read_text()
    assert parse_outputs(text) == {"verdict": "fail", "headline": hostile, "exit-code": "1"}
    delims = re.findall(r"^headline<<(.+)$", text, re.M)
    assert len(delims) == 1 and re.fullmatch(r"ghadelimiter_[0-9a-f]{32}", delims[0])


def test_workflow_commands__outputs_without_file_is_a_no_op():
    write_outputs(None, {"verdict": "pass"})


def test_workflow_commands__step_summary_capped_at_1_mib_including_existing(tmp_path):
    path = tmp_path / "summary"
    path.write_text("x" * 1000)
    truncated = append_step_summary(path, "é" * STEP_SUMMARY_LIMIT, "\n(cut)\n")
    assert truncated
    data = path.read_bytes()
    assert len(data) <= STEP_SUMMARY_LIMIT and data.endswith(b"\n(cut)\n")
    data.decode("utf-8")  # never cut inside a character


def test_workflow_commands__step_summary_small_is_appended_whole(tmp_path):
    path = tmp_path / "summary"
    assert not append_step_summary(path, "# one", "(cut)")
    assert not append_step_summary(path, "# two\n", "(cut)")
    assert path.read_text() == "# one\n# two\n"


def test_workflow_commands__annotation_escapes_untrusted_text():
    line = annotation("error", "token '\n::set-output name=verdict::pass' 100%", "a: b, c")
    assert line == "::error title=a%3A b%2C c::token '%0A::set-output name=verdict::pass' 100%25\n"
    assert line.count("\n") == 1


def test_workflow_commands__at_most_10_annotations_a_level_and_the_note_is_shown():
    out = io.StringIO()
    written = emit_annotations(out, [("error", "t", f"m{i}") for i in range(120)])
    lines = out.getvalue().splitlines()
    assert written == 10 and len(lines) == 11
    assert sum(line.startswith("::error") for line in lines) == 10
    assert lines[-1].startswith("::warning") and "110 more annotations" in lines[-1]


def test_workflow_commands__too_many_warnings_keep_room_for_the_note():
    out = io.StringIO()
    items = [("error", "t", f"e{i}") for i in range(5)] + [("warning", "t", f"w{i}") for i in range(30)]
    assert emit_annotations(out, items) == 14
    lines = out.getvalue().splitlines()
    warnings = [line for line in lines if line.startswith("::warning")]
    assert sum(line.startswith("::error") for line in lines) == 5
    assert len(warnings) == 10  # GitHub shows 10: nine of ours and the note
    assert warnings[-1] == lines[-1] and "21 more annotations left out" in lines[-1]


def test_workflow_commands__warnings_already_written_in_the_step_count():
    out = io.StringIO()
    assert emit_annotations(out, [("warning", "t", f"w{i}") for i in range(12)], used={"warning": 3}) == 6
    lines = out.getvalue().splitlines()
    assert len(lines) == 7 and "6 more annotations" in lines[-1]


def test_workflow_commands__within_the_limits_no_note():
    out = io.StringIO()
    items = [(level, "t", f"{level}{i}") for level in ("error", "warning", "notice") for i in range(10)]
    assert emit_annotations(out, items) == 30
    assert "more annotations" not in out.getvalue()


# ------------------------------------------------------------------ runner files that are not files
@pytest.mark.parametrize("write", [
    lambda path: write_outputs(path, {"verdict": "pass"}),
    lambda path: append_step_summary(path, "# hi", "(cut)"),
])
def test_workflow_commands__folder_is_bad_input_named_by_its_variable(tmp_path, write):
    with pytest.raises(BadInput) as info:
        write(tmp_path)
    assert info.value.what.endswith(f"={tmp_path}: is a folder, not a file")
    assert info.value.what.split("=")[0] in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")
    assert "the Actions runner sets it" in info.value.hint


def test_workflow_commands__missing_folder_and_device_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="GITHUB_OUTPUT=.*: its folder does not exist"):
        write_outputs(tmp_path / "no" / "out", {"verdict": "pass"})
    with pytest.raises(BadInput, match="GITHUB_STEP_SUMMARY=/dev/null: is a character device, not a file"):
        append_step_summary(Path("/dev/null"), "# hi", "(cut)")
    assert not (tmp_path / "no").exists()


def test_workflow_commands__fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Only a stat here, so this test cannot hang; writing through the CLI, with a
    # timeout, is tests/adversarial/test_files.py.
    for variable in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        with pytest.raises(BadInput, match=f"{variable}=.*fifo: is a FIFO \\(named pipe\\), not a file"):
            check_runner_file(fifo, variable)


def test_workflow_commands__check_runner_file_accepts_a_file_to_be(tmp_path):
    check_runner_file(None, "GITHUB_OUTPUT")
    check_runner_file(tmp_path / "new", "GITHUB_OUTPUT")
    (tmp_path / "old").write_text("x")
    check_runner_file(tmp_path / "old", "GITHUB_STEP_SUMMARY")
    assert not (tmp_path / "new").exists()


def test_workflow_commands__lone_surrogate_is_written_as_its_escape(tmp_path):
    path = tmp_path / "out"
    write_outputs(path, {"headline": "prompt '\ud800' drifted"})
    append_step_summary(tmp_path / "summary", "# \udfff", "(cut)")
    assert path.read_text(encoding="utf-8") == "headline=prompt '\\ud800' drifted\n"
    assert (tmp_path / "summary").read_text(encoding="utf-8") == "# \\udfff\n"
