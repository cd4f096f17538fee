"""Fixtures shared by the test suites: synthetic results DBs, the app's environment, and AppTest helpers.

Why fixtures and not an importable helper module: test folders mirror the package layout, and pytest puts
each folder (not `tests/`) on the path, so shared code reaches the tests as fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def app_main() -> str:
    """Path of the Streamlit entry point, for `AppTest.from_file` and `streamlit run`."""
    return APP_MAIN


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory) -> Callable[..., Path]:
    """`synthetic_db(n, seed)`: a synthetic results DB (plus the hand-checked rows), built once per session.

    Each suite keeps its own size and seed, so the numbers its tests were written against stay the same.
    """
    from analysis.data import synthetic

    built: dict[tuple, Path] = {}

    def make(n: int, seed: int, *, hand_rows: bool = True) -> Path:
        key = (n, seed, hand_rows)
        if key not in built:
            path = tmp_path_factory.mktemp(f"synthetic-{n}-{seed}") / "seam.duckdb"
            synthetic.make_synthetic_db(path, n, seed=seed)
            if hand_rows:
                synthetic.add_hand_rows(path)
            built[key] = path
        return built[key]

    return make


@pytest.fixture()
def app_env(db, monkeypatch, tmp_path) -> Path:
    """Point the app at the suite's `db` fixture, with labels and exports in the test's own folder."""
    monkeypatch.setenv("SEAM_DB", str(db))
    monkeypatch.setenv("SEAM_LABELS", str(tmp_path / "labels.sqlite"))
    monkeypatch.setenv("SEAM_EXPORTS", str(tmp_path / "exports"))
    return tmp_path


@pytest.fixture()
def run_app(app_env) -> Callable:
    """`run_app(page=None, check=True, **query)`: the app in AppTest, on `page` with URL parameters `query`.

    Without a page the parameters are set before the first run (the default page reads them then); with a
    page they are set before switching to it. `check` asserts the page raised nothing.
    """
    from streamlit.testing.v1 import AppTest

    def run(page: str | None = None, *, check: bool = True, timeout: float = 90, **query):
        at = AppTest.from_file(APP_MAIN, default_timeout=timeout)
        if not page:
            at.query_params.update(query)
        at.run()
        if page:
            at.query_params.update(query)
            at.switch_page(f"views/{page}.py").run()
        if check:
            assert not at.exception, [e.value for e in at.exception]
        return at

    return run


def _frames(at) -> list:
    return [d.value for d in at.dataframe]


@pytest.fixture(scope="session")
def find_frame() -> Callable:
    """`find_frame(at, *cols)`: the first dataframe the page rendered that has all of `cols`."""

    def find(at, *cols):
        for df in _frames(at):
            if set(cols) <= set(df.columns):
                return df
        raise AssertionError(f"no dataframe with columns {cols}: {[list(d.columns) for d in _frames(at)]}")

    return find


@pytest.fixture(scope="session")
def label_button() -> Callable:
    """`label_button(at, "a")`: the Spot-check button of that label for the pair on screen (its key names
    the pair: `lab_a|<a_id>|<b_id>`)."""

    def find(at, which: str):
        for b in at.button:
            if (b.key or "").startswith(f"lab_{which}|"):
                return b
        raise AssertionError(f"no lab_{which} button: {[b.key for b in at.button]}")

    return find
