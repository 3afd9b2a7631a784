"""Every report opened in a real browser (issue 17): headless Chromium from the OS packages, driven by playwright.

The reports are those of the session's hostile pipeline run (tests/test_security.py `hostile`, built once for all
workers by conftest.shared_project): the sample plus three script payloads in names, so these checks also see
whether any payload runs (an alert() is a dialog, recorded as a failure). One browser opens every page once, at
1366x768, and records:

- console errors and uncaught page errors, and dialogs (alert/confirm: a payload ran);
- every request that would leave the file: each is intercepted, only file:// and data: are let through;
- on finance.html, whether the budget figure, the confidence badge and the as-of line (ids `budget`, `badge`,
  `as-of`) lie inside the first viewport, with no scrolling;
- elements wider than the viewport (or reaching past its right edge), and the page's own horizontal scroll;
- every <img>: it decodes, naturalWidth x naturalHeight > 0, and drawn on a canvas it has visible pixels.

A first-screen screenshot of every report is saved in a temp folder, named in the test output (a warning, so
pytest-xdist relays it too). Chromium: /usr/bin/chromium (`apt-get install chromium`, which .ci/run does when
it is missing); without it these tests skip with a loud message, or fail when SIZING_REQUIRE_BROWSER=1 (.ci/run
sets it once Chromium is installed).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.test_security import hostile  # noqa: F401  (the session's shared run: a fixture)

pytestmark = pytest.mark.e2e

VIEWPORT = {"width": 1366, "height": 768}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIRST_SCREEN_IDS = ("budget", "badge", "as-of")  # finance.html's first screen (issue 17)
ALLOWED_SCHEMES = ("file:", "data:")

# Measures the page in the browser: what is wider than the viewport, and every image decoded and drawn.
MEASURE_JS = """
async () => {
  const vw = document.documentElement.clientWidth;
  const describe = (el) => {
    const cls = (el.getAttribute('class') || '').trim().split(/\\s+/).slice(0, 2).join('.');
    const text = (el.innerText || el.getAttribute('alt') || '').trim().replace(/\\s+/g, ' ').slice(0, 50);
    return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (cls ? '.' + cls : '') + (text ? ` "${text}"` : '');
  };
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.width > vw + 1 || r.right > vw + 1) {
      const parent = el.parentElement;
      const pr = parent ? parent.getBoundingClientRect() : null;
      if (pr && (pr.width > vw + 1 || pr.right > vw + 1)) continue;  // report the outermost one only
      wide.push(`${describe(el)}: ${Math.round(r.width)} px wide, right edge at ${Math.round(r.right)} (viewport ${vw})`);
    }
  }
  const images = [];
  for (const img of document.images) {
    let decoded = true, error = '';
    try { await img.decode(); } catch (e) { decoded = false; error = String(e); }
    let inked = -1;
    if (decoded && img.naturalWidth > 0 && img.naturalHeight > 0) {
      try {
        const c = document.createElement('canvas');
        c.width = Math.min(img.naturalWidth, 2000); c.height = Math.min(img.naturalHeight, 2000);
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0, c.width, c.height);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        inked = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] > 0 && (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245)) inked++;
        }
      } catch (e) { error = 'canvas: ' + String(e); }
    }
    images.push({src: img.currentSrc.slice(0, 40), decoded, error, w: img.naturalWidth, h: img.naturalHeight, inked});
  }
  return {wide, images, scroll_width: document.documentElement.scrollWidth, viewport_width: vw};
}
"""

FIRST_SCREEN_JS = """
(ids) => ids.map((id) => {
  const el = document.getElementById(id);
  if (!el) return {id, found: false};
  const r = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  return {id, found: true, top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width,
          height: r.height, visible: style.visibility !== 'hidden' && style.display !== 'none',
          text: (el.innerText || '').trim().slice(0, 120)};
})
"""


def _no_browser(message: str) -> None:
    """Skip loudly (or fail, where the CI installed Chromium and requires it)."""
    banner = f"BROWSER TESTS NOT RUN: {message}"
    if os.environ.get("SIZING_REQUIRE_BROWSER") == "1":
        pytest.fail(banner + " (SIZING_REQUIRE_BROWSER=1: .ci/run installed Chromium, so this is an error)")
    print("\n" + "!" * 80 + f"\n{banner}\n" + "!" * 80, file=sys.stderr)
    warnings.warn(banner, stacklevel=2)
    pytest.skip(banner)


def chromium_path() -> str | None:
    """Debian's Chromium: $SIZING_CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium; None when absent."""
    for candidate in (os.environ.get("SIZING_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _watch(page: Any, rec: dict[str, Any]) -> None:
    """Record on `rec` the page's console errors, uncaught errors, dialogs and requests outside the file."""

    def on_route(route: Any, request: Any) -> None:
        if request.url.startswith(ALLOWED_SCHEMES):
            route.continue_()
        else:
            rec["blocked"].append(request.url[:200])
            route.abort()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            rec["console"].append(msg.text[:300])

    def on_dialog(dialog: Any) -> None:
        rec["dialogs"].append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_request(request: Any) -> None:
        if not request.url.startswith(ALLOWED_SCHEMES):
            rec["blocked"].append(request.url[:200])

    page.route("**/*", on_route)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: rec["console"].append(f"uncaught: {exc}"[:300]))
    page.on("dialog", on_dialog)
    page.on("request", on_request)


def visit_all(reports: list[Path], shots: Path) -> dict[str, dict[str, Any]]:
    """Open each report once in one headless Chromium; everything the tests check, per report name."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the Python package playwright is not installed (make venv installs it from requirements.lock)")
    exe = chromium_path()
    if exe is None:
        _no_browser("Chromium is not installed: `apt-get install -y chromium` (.ci/run does it when it can)")
    results: dict[str, dict[str, Any]] = {}
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        except Exception as exc:  # a broken install: say why, in one line
            _no_browser(f"Chromium at {exe} did not start: {str(exc).splitlines()[0]}")
        context = browser.new_context(viewport=VIEWPORT, java_script_enabled=True, offline=True)
        try:
            for path in reports:
                rec: dict[str, Any] = {"console": [], "blocked": [], "dialogs": []}
                page = context.new_page()
                _watch(page, rec)
                page.goto(path.as_uri(), wait_until="load")
                rec.update(page.evaluate(MEASURE_JS))
                rec["first_screen"] = page.evaluate(FIRST_SCREEN_JS, list(FIRST_SCREEN_IDS))
                page.screenshot(path=str(shots / f"{path.stem}.png"))  # the first screen only
                rec["blocked"] = sorted(set(rec["blocked"]))
                results[path.stem] = rec
                page.close()
        finally:
            context.close()
            browser.close()
    return results


@pytest.fixture(scope="module")
def visited(hostile) -> dict[str, dict[str, Any]]:  # noqa: F811
    reports = sorted((hostile / "reports").glob("*.html"))
    assert len(reports) >= 17, [p.name for p in reports]
    # kept after the session (pytest prunes its own temp folders after three runs): the test artefacts
    shots = Path(tempfile.mkdtemp(prefix="sizing-browser-screenshots-"))
    start = time.perf_counter()
    results = visit_all(reports, shots)
    note = f"browser tests: first-screen screenshots of {len(results)} reports in {shots} ({time.perf_counter() - start:.1f} s)"
    print("\n" + note)
    warnings.warn(note, stacklevel=1)
    return results


def _problems(visited: dict[str, dict[str, Any]], key: str) -> list[str]:
    return [f"{name}: {item}" for name, rec in visited.items() for item in rec[key]]


def test_no_console_errors_and_no_payload_runs(visited):
    problems = _problems(visited, "console") + [f"{p} (a dialog: script ran)" for p in _problems(visited, "dialogs")]
    assert not problems, "\n".join(problems)


def test_no_request_leaves_the_file(visited):
    blocked = _problems(visited, "blocked")
    assert not blocked, "requests outside file:// and data: (blocked):\n" + "\n".join(blocked)


def test_no_element_is_wider_than_the_viewport(visited):
    problems = [f"{name}: {w}" for name, rec in visited.items() for w in rec["wide"][:5]]
    problems += [
        f"{name}: the page scrolls sideways ({rec['scroll_width']} px > {rec['viewport_width']})"
        for name, rec in visited.items()
        if rec["scroll_width"] > rec["viewport_width"] + 1
    ]
    assert not problems, "\n".join(problems)


def test_every_chart_image_decodes_and_is_not_blank(visited):
    problems = []
    charts = 0
    for name, rec in visited.items():
        for i, img in enumerate(rec["images"]):
            charts += 1
            if not img["decoded"] or img["w"] <= 0 or img["h"] <= 0:
                problems.append(
                    f"{name}: image {i} ({img['src']}...) does not decode: {img['error'] or 'naturalWidth 0'}"
                )
            elif img["inked"] == 0:
                problems.append(f"{name}: image {i} is blank (no visible pixel)")
            elif img["inked"] < 0:
                problems.append(f"{name}: image {i} could not be drawn: {img['error']}")
    assert charts >= 17, f"only {charts} images in all reports"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("element_id", FIRST_SCREEN_IDS)
def test_finance_first_screen_shows_it_without_scrolling(visited, element_id):
    """At 1366x768 the budget figure, the badge and the as-of line are inside the first viewport."""
    found = {e["id"]: e for e in visited["finance"]["first_screen"]}[element_id]
    assert found["found"], (
        f"finance.html has no element with id '{element_id}': the first screen (issue 17: budget figure, "
        "confidence badge, as-of line) must carry ids budget, badge and as-of"
    )
    inside = (
        found["visible"]
        and found["width"] > 0
        and found["height"] > 0
        and found["top"] >= 0
        and found["left"] >= 0
        and found["bottom"] <= VIEWPORT["height"]
        and found["right"] <= VIEWPORT["width"]
    )
    assert inside, f"#{element_id} is not inside the first 1366x768 screen: {found}"


BAD_PAGE = """<html><body><p id="budget" style="margin-top:900px">$1</p>
<img src="https://example.com/a.png">
<img src="data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxMCIgaGVpZ2h0PSIxMCI+PC9zdmc+">
<div style="width:2000px">wide</div>
<script>console.error("boom"); alert(1);</script></body></html>"""


def test_the_checks_catch_a_bad_page(tmp_path):
    """Each check can fail: a page with a console error, an alert, a remote image, a blank one, a wide block and a
    budget figure below the fold."""
    (tmp_path / "bad.html").write_text(BAD_PAGE, encoding="utf-8")
    rec = visit_all([tmp_path / "bad.html"], tmp_path)["bad"]
    assert "boom" in rec["console"] and rec["dialogs"] == ["alert: 1"]
    assert rec["blocked"] == ["https://example.com/a.png"]
    assert [w.split(":")[0] for w in rec["wide"]] == ['div "wide"'] and rec["scroll_width"] > 1366
    remote, blank = rec["images"]
    assert not remote["decoded"] and remote["w"] == 0
    assert blank["decoded"] and (blank["w"], blank["h"]) == (10, 10) and blank["inked"] == 0  # an empty SVG
    budget = {e["id"]: e for e in rec["first_screen"]}["budget"]
    assert budget["found"] and budget["top"] >= 900 > VIEWPORT["height"]
    assert (tmp_path / "bad.png").stat().st_size > 0  # the first-screen screenshot
