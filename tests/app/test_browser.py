"""End-to-end: the real app under `streamlit run`, driven by headless Chromium (Debian `chromium`).

Why on top of AppTest: AppTest runs page scripts in-process; only a browser proves that the pages render
in the real frontend (Plotly charts, dataframes, keyboard shortcuts, URL-bound widgets) and that a label
given with a click reaches SQLite and an export reaches disk. Screenshots of every page land in
test-artifacts/screenshots/ for a human to look at.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from analysis.data import synthetic

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (/usr/bin/chromium)"),
]

PAGES = [("", "SEAM Lens — overview"), ("saturation", "Saturation: PM × RM"),
         ("distributions", "SEAM distributions"), ("browser", "Mismatch browser"), ("spotcheck", "Spot-check"),
         ("export", "Filtering & export"), ("prompt-map", "Prompt map"), ("why", "Why does the RM disagree?")]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    from app.local_server import serve

    tmp = tmp_path_factory.mktemp("browser")
    db = synthetic.make_synthetic_db(tmp / "seam.duckdb", 600, seed=3)
    synthetic.add_hand_rows(db)
    env = dict(os.environ, SEAM_LABELS="", SEAM_EXPORTS="")
    with serve(db, env=env, log=tmp / "streamlit.log") as url:
        yield {"url": url, "db": db, "tmp": tmp}


@pytest.fixture(scope="module")
def browser():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def wait_ready(page, timeout_s: float = 60) -> None:
    """Wait until the script run finished: the app's status widget shows no 'Running' for a while."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.evaluate("""() => {
            const w = document.querySelector('[data-testid="stStatusWidget"]');
            return !!(w && /Running|Connecting/i.test(w.innerText));
        }""")
        skeleton = page.locator('[data-testid="stSkeleton"]').count()
        if running or skeleton:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        time.sleep(0.2)
    raise TimeoutError("app did not become idle")


def open_page(browser, url: str, heading: str, size: tuple[int, int] = (1500, 1100)):
    """A new browser page at `url` (viewport `size`), once its `heading` is shown and the app is idle."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(url)
    page.get_by_role("heading", name=heading).wait_for(timeout=60_000)
    wait_ready(page)
    return page


def shot(page, name: str) -> Path:
    """Screenshot the whole page: Streamlit scrolls inside its main container, so the viewport is
    stretched to the content height first (full_page alone would stop at the window)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate("""() => {
        const m = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(m.scrollHeight, document.body.scrollHeight);
    }""")
    page.set_viewport_size({"width": size["width"], "height": min(max(height + 40, size["height"]), 8000)})
    time.sleep(0.8)  # let charts re-layout
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def test_every_page_loads(app_server, browser):
    """Every page at 1280x720 by its own URL (`/overview` too), screenshots, no Deploy button or developer
    menu, and no request leaves localhost (the favicon came from a font CDN)."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        (app_server["url"], "data:", "blob:", "about:")) else None)
    for url_path, title in PAGES + [("overview", "SEAM Lens — overview")]:
        page.goto(f"{app_server['url']}/{url_path}")
        page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
        wait_ready(page)
        assert page.get_by_text("Page not found").count() == 0, f"/{url_path}: Page not found"
        assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {url_path}"
        if url_path != "overview":
            shot_viewport(page, f"{url_path or 'overview'}-1280x720")
            shot(page, url_path or "overview")
    assert page.url.rstrip("/").endswith("/overview"), f"the root does not open the Overview's URL: {page.url}"
    assert page.locator('[data-testid="stAppDeployButton"]').count() == 0, "Deploy button shown"
    menu = page.locator('[data-testid="stMainMenu"]')
    if menu.count():  # viewer mode keeps a menu (print, settings) without the developer options
        menu.first.click()
        page.wait_for_timeout(500)
        items = page.locator('[data-testid="stMainMenuList"]').inner_text() if page.locator(
            '[data-testid="stMainMenuList"]').count() else page.inner_text("body")
        for dev in ("Clear cache", "Deploy this app", "Developer options"):
            assert dev not in items, f"developer menu item {dev!r} shown: {items[:300]!r}"
        page.keyboard.press("Escape")
    page.close()
    assert not errors, errors
    assert not outside, f"requests left localhost: {sorted(set(outside))[:10]}"


def _labels(app_server) -> list[tuple]:
    labels_db = Path(str(app_server["db"]).replace(".duckdb", ".labels.sqlite"))
    if not labels_db.exists():
        return []
    with sqlite3.connect(labels_db) as con:
        return con.execute("SELECT annotator, a_id, b_id, label, shown_left FROM labels ORDER BY created_at").fetchall()


def _response_text(app_server, rid: str) -> str:
    import duckdb
    con = duckdb.connect(str(app_server["db"]), read_only=True)
    try:
        return con.execute("SELECT text FROM responses WHERE response_id = ?", [rid]).fetchone()[0]
    finally:
        con.close()


def test_fast_double_keypress_labels_only_the_pair_on_screen(app_server, browser):
    """A then B 60 ms apart, four times. The page logs which pair is on screen at every keydown; each stored
    label must be the key pressed for a pair that was on screen at that moment (a B that arrives before the
    next pair is drawn labels nothing — it used to label the next, never-seen pair)."""
    page = open_page(browser, f"{app_server['url']}/spotcheck?annotator=zed&c_kind=dataset&c_variant=adv", "Spot-check",
                     size=(1280, 720))
    page.evaluate("""() => {
        window.__keys = [];
        document.addEventListener('keydown', (e) => {
            const t = document.querySelectorAll('[data-testid="stText"]');
            window.__keys.push({key: e.key.toLowerCase(), left: t[1] ? t[1].innerText : null,
                                right: t[2] ? t[2].innerText : null});
        }, true);
    }""")
    for _ in range(4):
        page.keyboard.press("a")
        page.wait_for_timeout(60)
        page.keyboard.press("b")
        wait_ready(page)
    log = page.evaluate("() => window.__keys")
    assert len(log) == 8, log
    mine = [r for r in _labels(app_server) if r[0] == "zed"]
    assert 4 <= len(mine) <= 8, mine
    for _, a, b, label, left in mine:
        right = b if left == a else a
        better = a if label == "a" else b
        key = "a" if better == left else "b"
        lt, rt = _response_text(app_server, left).strip(), _response_text(app_server, right).strip()
        seen = [e for e in log if e["key"] == key and (e["left"] or "").strip() == lt and (e["right"] or "").strip() == rt]
        assert seen, f"label {label!r} for a pair not on screen when {key.upper()} was pressed: {(a, b)}; log {log}"
    page.close()


def test_shift_hotkeys_label_the_screen_side(app_server, browser):
    """Shift+A then Shift+B (a held Shift or Caps Lock): each stores the label of the side pressed, for the pair
    that was on screen (Streamlit matches shortcut modifiers exactly, so Shift+A used to do nothing)."""
    page = open_page(browser, f"{app_server['url']}/spotcheck?annotator=shifty&c_kind=dataset&c_variant=adv", "Spot-check",
                     size=(1280, 720))
    shown = []
    for key in ("Shift+A", "Shift+B"):
        texts = page.locator('[data-testid="stText"]')
        shown.append((texts.nth(1).inner_text().strip(), texts.nth(2).inner_text().strip()))
        page.keyboard.press(key)
        wait_ready(page)
    mine = [r for r in _labels(app_server) if r[0] == "shifty"]
    assert len(mine) == 2, f"Shift+A / Shift+B stored {len(mine)} label(s), expected 2: {mine}"
    for (_, a, b, label, left), side, (lt, rt) in zip(mine, ("left", "right"), shown):
        right = b if left == a else a
        assert (_response_text(app_server, left).strip(), _response_text(app_server, right).strip()) == (lt, rt), \
            f"label for a pair not on screen: {(a, b)}"
        want = (left if side == "left" else right)
        assert label == ("a" if want == a else "b"), \
            f"{side} pressed with Shift, stored label {label!r} (a={a}, b={b}, shown left={left})"
    twins = page.locator(".st-key-shift_keys").bounding_box()
    assert twins and twins["height"] <= 2, f"the Shift+key twin buttons take space on screen: {twins}"
    page.close()


def test_name_field_then_shortcuts_and_pair_above_the_fold(app_server, browser):
    """Type a name and press Enter: the field closes (keys no longer type into it: 'yvesa'), the settings
    fold away and the pair with its buttons fits in 1280x720."""
    page = open_page(browser, f"{app_server['url']}/spotcheck", "Spot-check", size=(1280, 720))
    box = page.get_by_role("textbox", name="annotator")
    box.click()
    box.type("yves")
    box.press("Enter")
    wait_ready(page)
    page.keyboard.press("a")
    wait_ready(page)
    names = {r[0] for r in _labels(app_server)}
    assert "yves" in names and "yvesa" not in names, names
    btn = page.get_by_role("button", name="A is better").bounding_box()
    assert btn and btn["y"] + btn["height"] <= 720, f"label button below the fold: {btn}"
    panels = page.locator('[data-testid="stText"]')
    top = panels.nth(1).bounding_box()
    assert top and top["y"] < 720, f"pair below the fold: {top}"
    shot_viewport(page, "spotcheck-labeling-1280x720")
    page.close()


def shot_viewport(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_spotcheck_two_labels_and_export(app_server, browser):
    page = open_page(browser, f"{app_server['url']}/spotcheck?annotator=alice", "Spot-check")
    shot(page, "spotcheck-before")
    first_a = page.locator('[data-testid="stText"]').nth(1).inner_text()
    page.get_by_role("button", name="A is better").click()
    wait_ready(page)
    # the next pair is shown and the previous one is revealed
    page.get_by_text("Revealed: the pair you just labeled").wait_for(timeout=30_000)
    assert page.locator('[data-testid="stText"]').nth(1).inner_text() != first_a
    # second label by keyboard shortcut (B)
    page.get_by_role("heading", name="Spot-check").click()
    page.keyboard.press("b")
    wait_ready(page)
    page.get_by_text("2 of 50 pairs in this queue labeled by you").wait_for(timeout=30_000)
    shot(page, "spotcheck-after-two-labels")

    labels_db = Path(str(app_server["db"]).replace(".duckdb", ".labels.sqlite"))
    with sqlite3.connect(labels_db) as con:
        rows = con.execute("SELECT annotator, label, kind FROM labels WHERE annotator = 'alice'").fetchall()
    assert len(rows) == 2 and {r[0] for r in rows} == {"alice"}
    assert {r[1] for r in rows} <= {"a", "b"}

    # export a subset (top 20% dropped, kept part) as JSONL
    page.goto(f"{app_server['url']}/export?e_q=20")
    page.get_by_role("heading", name="Filtering & export").wait_for(timeout=60_000)
    wait_ready(page)
    page.get_by_role("textbox", name="export name").fill("../browser-export")
    page.get_by_role("button", name="Export", exact=True).click()
    wait_ready(page)
    page.get_by_text("Exported").first.wait_for(timeout=60_000)
    shot(page, "export-done")
    with page.expect_download() as dl:  # a download, not only a server path
        page.get_by_role("button", name="Download browser-export.zip").click()
    import zipfile
    with zipfile.ZipFile(dl.value.path()) as zf:
        assert {"browser-export/data.jsonl", "browser-export/card.json"} <= set(zf.namelist()), zf.namelist()
    out = app_server["db"].parent / "exports" / "browser-export"
    card = json.loads((out / "card.json").read_text())
    assert card["filter"]["q"] == 0.2 and card["subset"] == "kept"
    lines = (out / "data.jsonl").read_text().splitlines()
    assert len(lines) == card["n"] > 0
    assert set(json.loads(lines[0])) >= {"prompt", "chosen", "rejected"}
    assert not (app_server["db"].parent / "browser-export").exists()
    page.close()


def test_prompt_map_lasso_opens_the_browser(app_server, browser):
    """Draw a lasso on the map; the selection is listed, then opened in the mismatch browser."""
    page = open_page(browser, f"{app_server['url']}/prompt-map", "Prompt map")
    box = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    cx, cy, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"], box["height"]
    page.mouse.move(cx - 0.3 * w, cy - 0.3 * h)
    page.mouse.down()
    for fx, fy in [(0.3, -0.3), (0.3, 0.3), (-0.3, 0.3), (-0.3, -0.29)]:
        page.mouse.move(cx + fx * w, cy + fy * h, steps=8)
    page.mouse.up()
    wait_ready(page)
    page.get_by_text("selected prompts").wait_for(timeout=30_000)
    shot(page, "prompt-map-selection")
    page.get_by_role("button", name="Open selection in the mismatch browser").click()
    page.get_by_role("heading", name="Mismatch browser").wait_for(timeout=60_000)
    wait_ready(page)
    page.get_by_text("samples selected on the prompt map").wait_for(timeout=30_000)
    shot(page, "browser-from-map-selection")
    page.close()


def test_saturation_cell_click_shows_its_samples(app_server, browser):
    page = open_page(browser, f"{app_server['url']}/saturation", "Saturation: PM × RM")
    page.get_by_text("PM pm-sft-1k  ×  RM rm-10k").wait_for(timeout=30_000)  # default cell
    box = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    # cells: PMs bottom -> top (pm-sft-1k, pm-sft-10k), RMs left -> right (rm-10k, rm-100k)
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
    wait_ready(page)
    page.get_by_text("PM pm-sft-10k  ×  RM rm-100k").wait_for(timeout=30_000)
    shot(page, "saturation-cell-clicked")
    page.close()


def test_browser_row_click_goes_into_the_url(app_server, browser):
    """Click the third row of the Mismatch browser's table: the URL's `b_row` then names that row (sample,
    variant, PM, RM — the row the same query returns third), the detail shows it, and opening that URL again
    (a shared link) selects the same row."""
    from urllib.parse import parse_qs, urlparse

    from analysis.queries.base import filter_options
    from analysis.queries.browser import BrowseFilter, browse_page
    from analysis.storage import store

    con = store.connect(app_server["db"], read_only=True)
    try:
        opts = filter_options(con)
        rows = browse_page(con, BrowseFilter(variants=tuple(opts["variants"]), policies=tuple(opts["policies"]),
                                             rewards=tuple(opts["rewards"])), sort="seam", descending=True)
    finally:
        con.close()
    want = rows.iloc[2]
    key = "|".join(str(want[c]) for c in ("sample_id", "variant", "policy", "reward"))
    line = f"variant {want['variant']}   PM {want['policy']}   RM {want['reward']}"

    def detail(page) -> list[str]:
        texts = page.locator('[data-testid="stText"]').all_inner_texts()
        return [t for t in texts if t.startswith(f"sample {want['sample_id']}   dataset") and line in t]

    page = open_page(browser, f"{app_server['url']}/browser", "Mismatch browser")
    assert "b_row" not in page.url, page.url
    box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 * 2 + 17)  # row marker of the third row (35 px rows)
    wait_ready(page)
    got = parse_qs(urlparse(page.url).query).get("b_row")
    assert got == [key], f"after clicking the third row the URL has b_row={got}, expected {key!r}: {page.url}"
    assert detail(page), f"detail does not show the clicked row {key!r}"
    shared = page.url
    page.close()

    page = open_page(browser, shared, "Mismatch browser")
    assert parse_qs(urlparse(page.url).query).get("b_row") == [key], page.url
    assert detail(page), f"reloading {shared} does not show row {key!r}"
    assert page.get_by_text("Showing the first row").count() == 0
    shot(page, "browser-row-from-url")
    page.close()
