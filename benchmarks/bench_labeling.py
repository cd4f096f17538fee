"""Spot-check labeling latency: keypress -> next pair on screen, in a real browser (Playwright + Debian chromium).

    python benchmarks/bench_labeling.py [--labels 60] [--base main] [--samples 600]

Runs this checkout's app and the app of `--base` (a temporary `git worktree`, removed afterwards) one after
the other on the same synthetic DB (each with its own labels file), presses A `--labels` times in each and
times from the keydown to the moment the left response on screen changes. Prints median and p90 for both,
side by side, and the ratio base / this. Pass `--base ''` to time only this checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def time_labels(browser, url: str, n: int) -> list[float]:
    """Milliseconds from each A keydown to the next pair's left response being on screen."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{url}/spotcheck?annotator=bench&c_kind=dataset&c_variant=adv&c_n={max(100, n + 20)}")
    page.get_by_role("button", name="A is better").wait_for(timeout=90_000)
    page.wait_for_timeout(1500)
    left = '[data-testid="stText"]'
    out = []
    for i in range(n + 3):  # the first 3 warm caches and are not counted
        before = page.locator(left).nth(1).inner_text()
        t0 = page.evaluate("() => performance.now()")
        page.keyboard.press("a")
        page.wait_for_function("""([sel, before]) => {
            const t = document.querySelectorAll(sel);
            return t.length > 1 && t[1].innerText !== before &&
                   !document.querySelector('[data-testid="stStatusWidget"]')?.innerText.match(/Running/);
        }""", arg=[left, before], timeout=30_000, polling="raf")
        t1 = page.evaluate("() => performance.now()")
        if i >= 3:
            out.append(t1 - t0)
        page.wait_for_timeout(150)  # a person reads; lets the previous run's tail finish
    page.close()
    return out


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=60, help="labels timed per app (>= 50 for a stable p90)")
    ap.add_argument("--base", default="main", help="git ref of the app to compare with ('' = none)")
    ap.add_argument("--samples", type=int, default=600, help="size of the synthetic DB")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from analysis.data import synthetic
    from app.local_server import serve
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as tmp:
        tmp = Path(tmp)
        db = synthetic.make_synthetic_db(tmp / "seam.duckdb", args.samples, seed=3)
        apps = [("this checkout", ROOT)]
        if args.base:
            base_dir = tmp / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_dir), args.base],
                           check=True, capture_output=True)
            apps.insert(0, (f"base ({args.base})", base_dir))
        results = {}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                for name, root in apps:
                    env = dict(os.environ, SEAM_LABELS=str(tmp / f"{root.name}.labels.sqlite"))
                    with serve(db, root=root, env=env) as url:
                        results[name] = time_labels(browser, url, args.labels)
                browser.close()
        finally:
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_dir)],
                               capture_output=True)
    print(f"keypress -> next pair, {args.labels} labels each, {os.cpu_count()} CPUs")
    print(f"{'app':<22}{'median ms':>12}{'p90 ms':>10}")
    for name, xs in results.items():
        print(f"{name:<22}{statistics.median(xs):>12.0f}{p90(xs):>10.0f}")
    if len(results) == 2:
        (_, old), (_, new) = results.items()
        print(f"{'ratio base / this':<22}{statistics.median(old) / statistics.median(new):>12.2f}"
              f"{p90(old) / p90(new):>10.2f}")


if __name__ == "__main__":
    main()
