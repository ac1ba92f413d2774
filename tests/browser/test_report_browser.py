"""report.html in real headless Chromium on a file:// URL: no console errors,
no network requests, key elements present, readable at phone width.
Screenshots go to artifacts/screenshots/ (or $PARITY_GATE_SCREENSHOTS) for a
person to look at; CI keeps that folder."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from _cdp import Browser, find_chromium

from gate.report import render as report

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "verdicts"
SHOTS = Path(os.environ.get("PARITY_GATE_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
DESKTOP = (1280, 800)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found; CI must run: apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    b = Browser(exe)
    yield b
    b.close()


def _evidence_verdict() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("verdict_evidence", FIXTURES / "evidence.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.evidence_verdict()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name in ("fail", "pass", "hostile", "evidence"):
        d = tmp_path_factory.mktemp(name)
        text = (json.dumps(_evidence_verdict()) if name == "evidence"
                else (FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        (d / "verdict.json").write_text(text, encoding="utf-8")
        out[name] = report.render_result(d)["report.html"].resolve().as_uri()
    return out


def _open(b: Browser, url: str, size: tuple[int, int]) -> None:
    b.open(url, *size, mobile=size == PHONE)


@pytest.mark.parametrize("name", ["fail", "pass", "hostile", "evidence"])
@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_browser__no_console_errors_no_requests_and_screenshot(
        browser: Browser, pages: dict[str, str], name: str, size: tuple[int, int]) -> None:
    _open(browser, pages[name], size)
    assert browser.problems() == []
    assert browser.requests() == [pages[name]], "the report must make no request beyond loading itself"
    label = "desktop" if size == DESKTOP else "phone"
    browser.screenshot(SHOTS / f"report-{name}-{label}.png")
    browser.screenshot(SHOTS / f"report-{name}-{label}-full.png", full_page=True)
    assert (SHOTS / f"report-{name}-{label}.png").stat().st_size > 5_000


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_browser__first_screen_tells_verdict_check_size_token_and_change(
        browser: Browser, pages: dict[str, str], size: tuple[int, int]) -> None:
    _open(browser, pages["fail"], size)
    verdict = browser.eval("document.getElementById('verdict').innerText")
    assert "FAIL" in verdict and "sampled-token logprobs" in verdict
    facts: list[dict[str, Any]] = browser.eval("""Array.from(document.querySelectorAll('#facts li')).map(li => (
        {text: li.innerText, top: li.getBoundingClientRect().top}))""")
    text = " ".join(f["text"] for f in facts)
    assert "Failed: sampled-token logprobs" in text and "0.72" in text and "7,200× the bound" in text
    assert "logprobs_mode raw_logprobs → processed_logprobs" in text and "vllm_version 0.32.0 → 0.33.0" in text
    assert "Worst token:" in text
    height = size[1]
    first_three = [f for f in facts if f["text"].startswith(("Failed: sampled-token logprobs", "Changed:"))]
    if size == DESKTOP:   # on a desktop all facts are above the fold; on a phone the first failure is
        assert all(f["top"] < height for f in facts)
    assert first_three[0]["top"] < height


@pytest.mark.parametrize("name", ["fail", "hostile", "evidence"])
def test_report_browser__phone_width_has_no_page_level_horizontal_scroll(
        browser: Browser, pages: dict[str, str], name: str) -> None:
    _open(browser, pages[name], PHONE)
    scroll_w, inner_w = browser.eval("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_w <= inner_w, "wide tables must scroll inside their own box"
    font_px = browser.eval("parseFloat(getComputedStyle(document.body).fontSize)")
    assert font_px >= 14


def test_report_browser__key_elements_present(browser: Browser, pages: dict[str, str]) -> None:
    _open(browser, pages["fail"], DESKTOP)
    counts = browser.eval("""({
        histograms: document.querySelectorAll('figure.histogram svg rect').length,
        positions: document.querySelectorAll('figure.position svg polyline').length,
        heat: document.querySelectorAll('figure.heatmap svg rect').length,
        worst: document.querySelectorAll('#worst-table tbody tr').length,
        checks: document.querySelectorAll('#checks-table tbody tr').length,
        changed: document.querySelectorAll('#env-table tr.differs').length,
        diagnosis: !!document.getElementById('diagnosis'),
        reproduce: document.querySelector('#reproduce + pre').innerText})""")
    assert counts["histograms"] >= 2 and counts["positions"] == 4 and counts["heat"] == 48
    verdict = json.loads((FIXTURES / "fail.json").read_text(encoding="utf-8"))
    assert counts["worst"] == len(verdict["worst_tokens"]) and counts["checks"] == len(verdict["checks"])
    assert counts["changed"] == 3 and counts["diagnosis"] is True
    assert counts["reproduce"] == verdict["reproduce"]


def test_report_browser__token_table_filters_and_sorts(browser: Browser, pages: dict[str, str]) -> None:
    _open(browser, pages["fail"], DESKTOP)
    shown = browser.eval("""(() => {
        const box = document.querySelector('input[data-filter=worst-table]');
        box.value = 'nucleus'; box.dispatchEvent(new Event('input'));
        return [Array.from(document.querySelectorAll('#worst-table tbody tr')).filter(r => !r.hidden)
                     .map(r => r.cells[2].innerText), document.getElementById('worst-count').innerText];
    })()""")
    rows, label = shown
    assert rows and set(rows) == {"nucleus"} and label == f"{len(rows)} shown"
    order = browser.eval("""(() => {
        const th = document.querySelectorAll('#worst-table thead th')[8];
        th.click();   // ascending abs diff
        return Array.from(document.querySelectorAll('#worst-table tbody tr')).map(r => parseFloat(r.cells[8].dataset.v));
    })()""")
    assert order == sorted(order) and order[0] < order[-1]
    assert browser.problems() == []


def test_report_browser__hostile_payloads_stay_inert(browser: Browser, pages: dict[str, str]) -> None:
    _open(browser, pages["hostile"], DESKTOP)
    found = browser.eval("""({
        scripts: document.scripts.length, imgs: document.images.length,
        h1: document.querySelectorAll('h1').length,
        text: document.body.innerText.includes('<script>alert(1)</script>')})""")
    assert found == {"scripts": 1, "imgs": 0, "h1": 1, "text": True}
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert browser.problems() == [] and browser.requests() == [pages["hostile"]]


_BOXES = """(sel => Array.from(document.querySelectorAll(sel)).map(e => {
    const r = e.getBoundingClientRect(), st = getComputedStyle(e);
    return {top: r.top + scrollY, w: r.width, h: r.height, shown: st.visibility === 'visible' && st.display !== 'none'
            && e.closest('details:not([open])') === null, text: e.innerText};
}))"""


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_browser__relation_and_matched_token_charts_are_visible_before_the_settings_table(
        browser: Browser, pages: dict[str, str], size: tuple[int, int]) -> None:
    _open(browser, pages["evidence"], size)
    relation = browser.eval(f"({_BOXES})('figure.relation svg')")
    matched = browser.eval(f"({_BOXES})('figure.matched svg')")
    settings = browser.eval(f"({_BOXES})('#env-table')")[0]
    assert len(relation) == 3 and len(matched) == 2      # the third config matched no token: said in words
    for box in relation + matched:
        assert box["shown"] and box["w"] > 150 and box["h"] > 80, box
        assert box["top"] < settings["top"], "the charts come before the settings table"
    dots = browser.eval("""Array.from(document.querySelectorAll('figure.matched')).map(f => (
        {caption: f.querySelector('figcaption').innerText, dots: f.querySelectorAll('circle').length}))""")
    hot = next(d for d in dots if d["caption"].startswith("hot:"))
    assert hot["dots"] == 3, "three matched tokens are three points: few is not none"
    rl = browser.eval(f"({_BOXES})('#rl-table')")[0]
    assert rl["shown"] and rl["top"] < settings["top"] and "matched sampled tokens" in rl["text"]
    assert "For PPO/GRPO" in browser.eval("document.querySelector('#rl .rl-sentence').innerText")
    if size == DESKTOP:
        first = relation[0]["top"]
        assert first < 1600, f"the first relation chart starts {first:.0f} px down"
    assert browser.problems() == [] and browser.requests() == [pages["evidence"]]
    browser.screenshot(SHOTS / f"report-evidence-{'desktop' if size == DESKTOP else 'phone'}-charts.png")


def test_report_browser__byte_level_tokens_render_readably_without_the_replacement_character(
        browser: Browser, pages: dict[str, str]) -> None:
    _open(browser, pages["evidence"], DESKTOP)
    text = browser.eval("document.documentElement.innerText + document.documentElement.textContent")
    assert "\ufffd" not in text and "Ġ" not in text and "Ċ" not in text
    tokens = browser.eval("Array.from(document.querySelectorAll('#worst-table mark.tok')).map(m => m.innerText)")
    assert {"␣the", "↵", "\\x19", "\\xc3", "你好"} <= set(tokens)
