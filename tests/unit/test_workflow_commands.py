from __future__ import annotations

import io
import re

from gate.workflow_commands import (STEP_SUMMARY_LIMIT, annotation, append_step_summary, emit_annotations,
                                    write_outputs)


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


def test_workflow_commands__at_most_50_annotations():
    out = io.StringIO()
    written = emit_annotations(out, [("error", "t", f"m{i}") for i in range(120)])
    lines = out.getvalue().splitlines()
    assert written == 49 and len(lines) == 50
    assert lines[-1].startswith("::warning") and "71 more annotations" in lines[-1]
