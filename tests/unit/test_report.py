"""gate.report.render: comment.md, summary.md and report.html from verdict.json."""
from __future__ import annotations

import argparse
import base64
import copy
import difflib
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gate.core.errors import BadInput
from gate.core.verdict import read_verdict
from gate.report import charts as _charts
from gate.report import render as report

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "verdicts"
SNAPSHOTS = ROOT / "tests" / "snapshots"
SNAPSHOT_HEADER = "<!-- parity-gate snapshot format 1 -->\n"
UPDATE_CMD = "PARITY_GATE_UPDATE_SNAPSHOTS=1 python -m pytest tests/unit/test_report.py"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("verdict_fixtures", FIXTURES / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _generator()


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def huge() -> dict[str, Any]:
    return gen.huge_verdict()


def assert_snapshot(request: pytest.FixtureRequest, name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME; the obtained text is written beside
    it on mismatch. Only PARITY_GATE_UPDATE_SNAPSHOTS=1 or --update-snapshots
    rewrites the golden file."""
    path = SNAPSHOTS / name
    obtained = path.with_name(f"{path.stem}.obtained{path.suffix}")
    update = (os.environ.get("PARITY_GATE_UPDATE_SNAPSHOTS") == "1"
              or bool(request.config.getoption("--update-snapshots", default=False)))
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SNAPSHOT_HEADER + text, encoding="utf-8")
        obtained.unlink(missing_ok=True)
        return
    if not path.exists():
        pytest.fail(f"snapshot {path.relative_to(ROOT)} missing; create it with: {UPDATE_CMD}")
    expected = path.read_text(encoding="utf-8")
    if not expected.startswith(SNAPSHOT_HEADER):
        pytest.fail(f"snapshot {path.relative_to(ROOT)} is stale (old format header); re-create it with: {UPDATE_CMD}")
    expected = expected[len(SNAPSHOT_HEADER):]
    if expected != text:
        obtained.write_text(text, encoding="utf-8")
        diff = "".join(list(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                 str(path.name), str(obtained.name)))[:60])
        pytest.fail(f"{path.relative_to(ROOT)} differs (obtained written to {obtained.relative_to(ROOT)}; "
                    f"if the change is intended: {UPDATE_CMD}):\n{diff}")
    obtained.unlink(missing_ok=True)


# ----------------------------------------------------------------- snapshots

@pytest.mark.parametrize("name", ["fail", "pass"])
def test_render__comment_matches_snapshot(request: pytest.FixtureRequest, name: str) -> None:
    assert_snapshot(request, f"comment_{name}.md", report.render_comment(load(name)))


@pytest.mark.parametrize("name", ["fail", "pass"])
def test_render__summary_matches_snapshot(request: pytest.FixtureRequest, name: str) -> None:
    assert_snapshot(request, f"summary_{name}.md", report.render_summary(load(name)))


def test_render__hostile_comment_matches_snapshot(request: pytest.FixtureRequest) -> None:
    assert_snapshot(request, "comment_hostile.md", report.render_comment(load("hostile")))


# ----------------------------------------------------------------- content

def test_render__comment_first_screen_names_verdict_failed_check_size_token_and_change() -> None:
    first_screen = "\n".join(report.render_comment(load("fail")).splitlines()[:12])
    assert "## ❌ parity-gate FAIL" in first_screen
    assert "**Failed: sampled-token logprobs**" in first_screen
    assert "**0.72** vs bound ≤ 1e-04 (7,200× the bound)" in first_screen
    assert "logprobs\\_mode raw\\_logprobs → **processed\\_logprobs**" in first_screen
    assert "vllm\\_version 0.32.0 → **0.33.0**" in first_screen
    assert "**Worst token:**" in first_screen and "<b>␣a</b>" in first_screen
    assert "> [!WARNING]" in first_screen and "different drivers" in first_screen


def test_render__comment_shows_diagnosis_before_checks_and_ends_with_reproduce() -> None:
    text = report.render_comment(load("fail"))
    assert text.index("### 🩺 Diagnosis") < text.index("### Checks")
    assert "✅ **restores parity**: logprobs\\_mode raw\\_logprobs -&gt; processed\\_logprobs" in text
    assert text.rstrip().endswith("```\nparity-gate check --suite suite.yaml --golden golden --out out\n```")


def test_render__comment_has_mermaid_xychart_without_exponents() -> None:
    text = report.render_comment(load("fail"))
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert len(blocks) == 2 and all(b.startswith("xychart-beta\n") for b in blocks)
    lines = [ln for b in blocks for ln in b.splitlines() if ln.strip().startswith("line [")]
    values = [float(x) for ln in lines for x in ln.strip()[6:-1].split(",")]
    assert max(values) == pytest.approx(0.72)
    assert not any("e" in ln[ln.index("["):] for ln in lines)   # mermaid's number grammar has no exponent


def test_render__comment_has_collapsible_section_per_config() -> None:
    text = report.render_comment(load("fail"))
    for cfg in ("greedy", "hot", "nucleus"):
        assert f"<details><summary><b>{cfg}</b>:" in text
    assert text.count("<details>") == text.count("</details>") == 4   # 3 configs + unchanged settings


def test_render__pass_comment_says_pass_and_lists_no_failures() -> None:
    text = report.render_comment(load("pass"))
    assert text.splitlines()[1].startswith("## ✅ parity-gate PASS: 6 of 6 checks passed")
    assert "**Failed" not in text and "❌" not in text
    assert "vllm\\_version 0.32.0 → **0.33.0**" in text   # a bump that passed still shows what moved


def test_render__fail_on_never_is_marked_not_blocking() -> None:
    v = load("fail")
    v["exit_code"] = 0
    text = report.render_comment(v)
    assert "**Not blocking:**" in text and "FAIL" in text.splitlines()[1]


def test_render__comment_marker_carries_context_and_cannot_close_early() -> None:
    text = report.render_comment(load("pass"), context="parity-gate (gpu)")
    assert text.startswith("<!-- parity-gate:comment context=parity-gate (gpu) -->\n")
    assert report.comment_marker() == "<!-- parity-gate:comment context=parity-gate -->"
    assert report.comment_marker("a") != report.comment_marker("b")
    evil = report.comment_marker("x --> <script>@y")
    assert evil.count("-->") == 1 and evil.endswith("-->") and "<script" not in evil


def test_render__report_url_is_linked_when_details_are_cut(huge: dict[str, Any]) -> None:
    text = report.render_comment(huge, report_url="https://example.invalid/run/1")
    assert "[Open the full HTML report](https://example.invalid/run/1)" in text


# ----------------------------------------------------------------- size

def test_render__comment_under_limit_for_huge_suite(huge: dict[str, Any]) -> None:
    text = report.render_comment(huge)
    assert len(text) <= report.COMMENT_LIMIT
    assert "Details were cut to fit GitHub's size limit" in text and "report.html" in text
    assert text.startswith(report.comment_marker())
    assert "## ❌ parity-gate FAIL" in text and "### Reproduce" in text


def test_render__summary_under_one_mib_for_huge_suite(huge: dict[str, Any]) -> None:
    text = report.render_summary(huge)
    assert len(text.encode("utf-8")) <= report.SUMMARY_LIMIT_BYTES
    assert "### Checks" in text and "### What changed" in text


@pytest.mark.parametrize("limit", [20_000, 6_000, 2_500])
def test_render__comment_respects_any_max_chars(huge: dict[str, Any], limit: int) -> None:
    assert len(report.render_comment(huge, max_chars=limit)) <= limit


def test_render__full_detail_kept_when_it_fits() -> None:
    text = report.render_comment(load("fail"))
    assert "Details were cut" not in text and "### Per sampling config" in text


def test_render__html_for_huge_suite_is_bounded(huge: dict[str, Any]) -> None:
    html = report.render_html(huge)
    assert len(html) < 8_000_000
    assert "A" * 1000 not in html and "&lt;script&gt;" * 100 not in html   # 100 kB tokens are cut


# ----------------------------------------------------------------- safety

def _outside_fences(text: str) -> str:
    return re.sub(r"^(`{3,}).*?^\1\s*$", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("render", [report.render_comment, report.render_summary], ids=["comment", "summary"])
def test_render__hostile_payloads_stay_inert_in_markdown(render: Any) -> None:
    text = render(load("hostile"))
    body = _outside_fences(text)
    lowered = body.lower()
    for tag in ("<script", "<img", "<h1", "</summary><h1", "<!-- -->"):
        assert tag not in lowered, tag
    assert not re.search(r"@[A-Za-z0-9]", body), "a mention could ping someone"
    assert not re.search(r"(?<!&)#\d", body), "an issue reference could link"
    assert "\\`" in body and not re.search(r"(?<!\\)`", body.replace("`fail-on: never`", "")), "raw backtick"
    assert body.count("<details>") == body.count("</details>")
    assert "[link](" not in body and "![x](" not in body
    assert "\u202e" not in text and "\\u202e" in text   # bidi override shown, not applied
    assert "A" * 100 not in text and "…(+" in text       # the 100 kB token is cut, visibly
    for table in re.findall(r"(?:^\|.*\|\n)+", body, re.M):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, f"a row breaks its table:\n{table[:500]}"


def test_render__hostile_payloads_are_escaped_in_html() -> None:
    html = report.render_html(load("hostile"))
    assert html.count("<script") == 1                 # only our own, CSP-hashed script
    assert "<img" not in html and "<h1>owned" not in html and "onerror=\"alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/details&gt;&lt;/summary&gt;&lt;h1&gt;owned" in html
    assert "A" * 100 not in html


def test_render__html_is_self_contained_and_script_hash_matches() -> None:
    html = report.render_html(load("fail"))
    for attr in re.findall(r"""\b(?:src|href|xlink:href|action)\s*=\s*["']?([^"'\s>]+)""", html):
        assert attr.startswith(("data:", "#")), attr
    assert "@import" not in html and "url(" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp and "default-src 'none'" in csp.group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp.group(1)


def test_render__html_has_charts_tables_and_env_diff() -> None:
    html = report.render_html(load("fail"))
    assert html.count('<figure class="chart histogram">') == 2
    assert html.count('<figure class="chart position">') == 2
    assert '<figure class="chart heatmap">' in html
    assert 'id="worst-table"' in html and 'id="checks-table"' in html and 'id="env-table"' in html
    assert html.count('<tr class="differs">') == 3
    assert "meta name=\"viewport\"" in html


# ----------------------------------------------------------------- files and errors

def _write(tmp_path: Path, verdict: Any) -> Path:
    (tmp_path / "verdict.json").write_text(json.dumps(verdict), encoding="utf-8")
    return tmp_path


def test_render_result__writes_all_outputs_and_no_temp_files(tmp_path: Path) -> None:
    written = report.render_result(_write(tmp_path, load("fail")), context="ctx-a")
    assert sorted(written) == sorted(report.OUTPUTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*report.OUTPUTS, "verdict.json"])
    assert written["comment.md"].read_text(encoding="utf-8").startswith(report.comment_marker("ctx-a"))
    assert written["report.html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_run__rerenders_result_dir(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser, "report")
    args = parser.parse_args([str(_write(tmp_path, load("pass")))])
    assert report.run(args) == 0
    assert "PASS" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_render_result__missing_verdict_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        report.render_result(tmp_path)
    assert "verdict.json" in exc.value.what and str(tmp_path) in exc.value.what
    assert "parity-gate check" in exc.value.hint
    assert exc.value.exit_code == 2


def test_render_result__invalid_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "verdict.json").write_text('{"schema": "parity-gate/verdict",\n  "version": 1,,}', encoding="utf-8")
    with pytest.raises(BadInput, match=r"verdict\.json:2:\d+: not valid JSON"):
        report.render_result(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda v: v.update(version=2), "schema version 2 is not supported"),
    (lambda v: v.update(schema="other"), "not a parity-gate verdict"),
    (lambda v: v.update(verdict="maybe"), "verdict.verdict must be one of 'pass', 'fail'"),
    (lambda v: v.pop("checks"), "verdict has no 'checks'"),
    (lambda v: v["checks"][0].pop("status"), "verdict.checks[0] has no 'status'"),
])
def test_read_verdict__rejects_invalid_verdict(tmp_path: Path, mutate: Any, message: str) -> None:
    v = copy.deepcopy(load("pass"))
    mutate(v)
    with pytest.raises(BadInput, match=re.escape(message)):
        read_verdict(_write(tmp_path, v))
    assert not (tmp_path / "comment.md").exists()


def test_render__minimal_verdict_with_nulls_renders() -> None:
    v = {"schema": "parity-gate/verdict", "version": 1, "verdict": "pass", "exit_code": 0, "mode": "compare",
         "headline": "PASS: 1 of 1 checks passed", "reference": {"label": "A"}, "candidate": {"label": "B"},
         "environment_diff": [], "warnings": [], "diagnosis": None, "reproduce": "parity-gate compare A B",
         "checks": [{"id": "forced.logprobs_close", "title": "teacher-forced logprobs", "channel": "forced",
                     "config": None, "status": "pass", "measure": "max_abs_diff", "value": None, "op": "<=",
                     "bound": 1e-4, "n_bad": 0, "n_total": 0, "worst": None, "message": ""}],
         "measures": {"overall": {"forced": None, "sampler": None, "free_run": None}, "per_config": {}},
         "worst_tokens": [], "by_position": {}, "histogram": {}, "per_prompt": [], "prompts": {}}
    comment = report.render_comment(v)
    assert "| n/a |" in comment and "No version or engine setting differs." in comment
    assert "No token differs." in report.render_html(v)


# ----------------------------------------------------------------- numbers at the edge of float

def test_render__position_chart_spans_1e308_without_overflow() -> None:
    rows = [{"start": 0, "end": 8, "count": 3, "mean_abs_diff": 5e-324, "max_abs_diff": 1e308},
            {"start": 8, "end": 16, "count": 3, "mean_abs_diff": 1e-3, "max_abs_diff": "Infinity"}]
    (chart,) = _charts._position_charts({"forced": rows})
    assert chart["yticks"][-1]["label"] == "1e308" and len(chart["yticks"]) <= 13
    assert chart["points"][1]["y"] == chart["top"] and chart["points"][1]["max"] == float("inf")
    html = report.render_html(dict(load("fail"), by_position={"forced": rows}))
    assert "max inf" in html and "max 1e+308" in html


def test_render__mermaid_draws_inf_at_its_cap_and_says_so() -> None:
    (chart,) = _charts._mermaid({"sampler": [{"start": 0, "end": 4, "count": 1, "max_abs_diff": "Infinity"}]})
    assert chart["body"].endswith("line [10000]") and "inf and values above 1e+04 drawn at 1e+04" in chart["body"]


def test_read_verdict__fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "verdict.json")
    with pytest.raises(BadInput, match=r"verdict\.json: is a FIFO \(named pipe\), not a regular file"):
        read_verdict(tmp_path)


# ----------------------------------------------------------------- decode-path evidence

def _evidence_module() -> Any:
    spec = importlib.util.spec_from_file_location("verdict_evidence", FIXTURES / "evidence.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


evidence = _evidence_module()


def test_render__html_draws_relation_matched_tokens_and_rl_view_before_the_tables() -> None:
    html = report.render_html(evidence.evidence_verdict())
    assert html.count('<figure class="chart relation">') == 3
    assert html.count('<figure class="chart relation-residual">') == 3
    assert html.count('<figure class="chart relation-histogram">') == 3
    assert html.count('<figure class="chart matched">') == 3
    hot = html[html.index("hot: 3 matched sampled tokens"):]
    assert hot[:hot.index("</figure>")].count("<circle") == 3          # three tokens are drawn, not dropped
    assert "No sampled token matched" in html                          # nucleus: none at all, said in words
    assert 'id="rl-table"' in html and "For PPO/GRPO:" in html and "exp(run − golden)" in html
    order = [html.index(k) for k in ('id="evidence"', 'id="checks-table"', 'id="charts"', 'id="env-table"')]
    assert order == sorted(order)
    assert 'id="untested"' in html and "no two prompts share a 128-token block" in html


def test_render__html_tokens_are_readable_and_never_the_replacement_character() -> None:
    html = report.render_html(evidence.evidence_verdict())
    assert "\ufffd" not in html and "Ġ" not in html and "Ċ" not in html
    assert '<mark class="tok">␣the</mark>' in html and '<mark class="tok">\\x19</mark>' in html
    assert '<mark class="tok">\\xc3</mark>' in html and '<mark class="tok">你好</mark>' in html
    assert "def f(" in html and ":↵  é" in html                            # é split over two tokens, read whole
    decoded = report.render_html(dict(load("fail"), worst_tokens=[dict(load("fail")["worst_tokens"][0],
                                                                          token="\ufffd\x19")]))
    assert "\ufffd" not in decoded and '<mark class="tok">\\ufffd\\x19</mark>' in decoded


def test_render__markdown_tokens_are_readable() -> None:
    text = report.render_comment(evidence.evidence_verdict())
    assert "\ufffd" not in text and "Ġ" not in text and "<b>␣the</b>" in text and "def f(" in text


def test_render__zero_drift_is_not_a_red_line_and_red_only_for_a_failed_channel() -> None:
    flat = [{"start": 0, "end": 8, "count": 8, "mean_abs_diff": 0.0, "max_abs_diff": 0.0}]
    html = report.render_html(dict(load("pass"), by_position={"forced": flat, "sampler": flat}))
    assert "no drift: every token bitwise equal" in html
    charts = html[html.index('id="charts"'):html.index('id="worst-tokens"')]
    assert "#cf222e" not in charts.replace('fill="{{', "")
    passing = report.render_html(load("pass"))
    assert 'stroke="#cf222e"' not in passing[passing.index('id="charts"'):]
    failing = report.render_html(load("fail"))    # the sampler channel failed: red; forced passed: not
    assert failing.count('<polyline points="') == 4 and failing.count('fill="none" stroke="#cf222e"') == 1


def test_render__checks_that_are_not_per_token_say_their_own_unit() -> None:
    v = evidence.evidence_verdict()
    for text in (report.render_comment(v), report.render_html(v)):
        assert "judged on 200 tokens as a whole" in text
        assert "1 of 2 engine args (50.00%) not applied" in text
        assert "200 of 200 tokens" not in text and "1 of 2 tokens" not in text
    assert "512 of 1,536 tokens (33.33%) beyond tolerance" in report.render_comment(v)


def test_render__comment_has_evidence_table_rl_view_and_untested_knobs() -> None:
    text = report.render_comment(evidence.evidence_verdict())
    assert "### Decode-path evidence" in text and "### RL view: importance ratios on the same tokens" in text
    assert text.index("### Decode-path evidence") < text.index("### Checks")
    assert "| hot | slope 0.9998" in text and "3 tokens, max abs diff" in text
    assert "- **RL view:** For PPO/GRPO:" in text.split("### ")[0]          # on the first screen
    assert "**Untested here**" in text and "enable\\_prefix\\_caching changed" in text
    assert "| ratio ρ, 1st–99th percentile | 0.999999 – 1.000001 | 0.7408 – 1.35 |" in text


def test_render__comment_links_the_report_or_says_why_not() -> None:
    v = load("fail")
    linked = report.render_comment(v, report_url="https://github.com/o/r/actions/runs/1")
    assert "**Full report:** [report.html, with the charts](https://github.com/o/r/actions/runs/1)" in linked
    unlinked = report.render_comment(v)
    assert "**Full report:** report.html in the result folder" in unlinked and "--target-url" in unlinked
    odd = report.render_comment(v, report_url="https://x.invalid/a b)(c")
    assert "](https://x.invalid/a%20b%29%28c)" in odd
    assert "javascript" not in report.render_comment(v, report_url="javascript:alert(1)")
    assert "[report.html" in report.render_summary(v, report_url="https://github.com/o/r/actions/runs/1")


def test_render__old_verdicts_without_the_new_keys_render_no_evidence_section() -> None:
    html = report.render_html(load("fail"))
    assert 'id="evidence"' not in html and "Decode-path evidence" not in report.render_comment(load("fail"))
    v = evidence.evidence_verdict()
    v["measures"]["per_config"]["hot"]["semantics"] = {"reference": None, "candidate": None, "spread": None}
    v["sampler_matched"] = {"hot": None, "x": {"tokens": "many", "points": [[0, "NaN"], [1, None], "junk"]}}
    v["rl"] = {"view": "versions", "forced": None, "sampler": {"tokens": 0}}
    html = report.render_html(v)
    assert html.count('<figure class="chart relation">') == 2 and 'id="rl-table"' not in html
    report.render_comment(v)


def test_render__evidence_with_hostile_config_names_stays_inert() -> None:
    v = evidence.evidence_verdict()
    evil = "<script>alert(1)</script>@octocat"
    v["measures"]["per_config"] = {evil: v["measures"]["per_config"]["hot"]}
    v["sampler_matched"] = {evil: v["sampler_matched"]["hot"]}
    html = report.render_html(v)
    assert html.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = report.render_comment(v)
    assert "<script" not in text and "@&#8203;octocat" in text


def test_compare__real_traces_render_relation_matched_tokens_and_rl(tmp_path: Path) -> None:
    """The real CLI on hand-written traces: what compare measures is what the report draws."""
    import numpy as np

    from gate.core.trace import Record, Scores
    from tests._util import manifest, run_cli, write_trace

    def rec(i: int, *, shift: float, diverge: int) -> Record:
        rng = np.random.default_rng(i)
        lps = [float(v) for v in -rng.gamma(1.5, 1.2, 24)]
        ids = [int(t) for t in np.random.default_rng(100 + i).integers(10, 300, 24)]
        own = ids[:diverge] + [t + 1 for t in ids[diverge:]]
        return Record(config="hot", prompt_id=f"p{i}", sample=0, seed=7, prompt_token_ids=[1, 2, 3],
                      completion_token_ids=own, sampler=Scores("decode", [v + shift * (-1) ** p for p, v in
                                                                           enumerate(lps)]),
                      forced=Scores("prefill", [None, -1.0, -1.0] + lps, completion_token_ids=ids),
                      own=Scores("prefill", [None, -1.0, -1.0] + lps, completion_token_ids=own))
    sampling = {"hot": {"temperature": 0.7, "top_p": 0.95, "logprobs": 5, "max_tokens": 24, "seed": 7, "n": 1}}
    write_trace(tmp_path / "a", [rec(i, shift=0.0, diverge=24) for i in range(8)], manifest("golden", sampling=sampling))
    write_trace(tmp_path / "b", [rec(i, shift=0.03, diverge=3) for i in range(8)], manifest("obtained", sampling=sampling))
    proc = run_cli("compare", "a", "b", "--out", "res", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Warning" not in proc.stderr
    html = (tmp_path / "res" / "report.html").read_text(encoding="utf-8")
    assert '<figure class="chart relation">' in html and '<figure class="chart matched">' in html
    assert "24 matched sampled tokens" in html and 'id="rl-table"' in html
    comment = (tmp_path / "res" / "comment.md").read_text(encoding="utf-8")
    assert "### RL view" in comment and "| hot |" in comment


def test_report__weight_update_paths_in_comment_and_html():
    """A suite's declared update paths (verdict.weight_update, one check each)
    get their own table, with the cause of a failing path, in comment.md and
    report.html; hostile strings stay escaped."""
    from gate.core.verdict import add_update_paths

    path = {"name": "reload/keep/keep-cache", "verdict": "fail", "mechanism": "collective_rpc('reload_weights')",
            "checks": [{"id": "post_update.equals_fresh_new_weights", "status": "fail", "detail": "d",
                        "tokens_compared": 7, "max_abs_diff": 0.31}],
            "diagnosis": {"kind": "stale_prefix_cache", "summary": "stale prefix cache <script>x</script>"},
            "staleness": {"after_switch_max_abs_diff": 0.25, "after_switch_k3": 0.02, "expected": True}}
    v = add_update_paths(load("pass"), {"tolerance": 1e-4, "paths": [path]})
    md = report.render_comment(v)
    assert "### Weight-update paths (1 failed of 1)" in md
    assert "| ❌ | reload/keep/keep-cache | collective\\_rpc('reload\\_weights') | 7 | 0.31 | 0.25 (k3 0.02) |" in md
    assert "stale prefix cache &lt;script&gt;" in md and "<script>" not in md
    html = report.render_html(v)
    assert 'id="weight-update-table"' in html and "&lt;script&gt;" in html and "<script>x" not in html
