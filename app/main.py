"""SEAM Lens dashboard entry point.

    seam app --db cache/seam.duckdb            # or:
    streamlit run app/main.py -- --db cache/seam.duckdb [--labels FILE] [--exports DIR]

(or env SEAM_DB / SEAM_LABELS / SEAM_EXPORTS). Both listen on 127.0.0.1 only (`app/.streamlit/config.toml`,
which Streamlit reads from this script's folder); to expose the dashboard ask explicitly
(`seam app --host 0.0.0.0`) and set SEAM_APP_PASSWORD, see `app/access.py`.

Why one entry script with st.navigation: every page shares the same settings, the same "is the DB
usable" gate and the same error handling (a missing / empty / locked DB shows a message, never a
traceback), so they live here once instead of at the top of every page.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # a clone that was not pip-installed: make `analysis` and `app` importable
    import analysis  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from app import access, common

HERE = Path(__file__).resolve().parent



def _favicon():
    """The tab icon, drawn here and served by the app itself: Streamlit fetches material-icon and emoji
    favicons from a font CDN, which fails offline (and leaks that the app is open)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((4, 12, 40, 52), fill=(31, 119, 180, 220))
    d.ellipse((24, 12, 60, 52), fill=(214, 39, 40, 220))
    return img


st.set_page_config(page_title="SEAM Lens", page_icon=_favicon(), layout="wide")

OVERVIEW = st.Page(HERE / "views" / "overview.py", title="Overview", icon=":material/dashboard:", url_path="overview")


def _home() -> None:
    """The root URL: Streamlit serves the default page at `/` only (`/overview` said "Page not found"), so
    the root forwards to the Overview's own URL, keeping the query parameters."""
    st.switch_page(OVERVIEW, query_params={k: st.query_params.get_all(k) for k in st.query_params})


PAGES = [
    OVERVIEW,
    st.Page(HERE / "views" / "saturation.py", title="Saturation", icon=":material/grid_on:", url_path="saturation"),
    st.Page(HERE / "views" / "distributions.py", title="SEAM distributions", icon=":material/bar_chart:", url_path="distributions"),
    st.Page(HERE / "views" / "browser.py", title="Mismatch browser", icon=":material/search:", url_path="browser"),
    st.Page(HERE / "views" / "disagreement.py", title="Why does the RM disagree?", icon=":material/psychology_alt:",
            url_path="why"),
    st.Page(HERE / "views" / "spotcheck.py", title="Spot-check", icon=":material/rule:", url_path="spotcheck"),
    st.Page(HERE / "views" / "export.py", title="Filtering & export", icon=":material/filter_alt:", url_path="export"),
    st.Page(HERE / "views" / "prompt_map.py", title="Prompt map", icon=":material/scatter_plot:", url_path="prompt-map"),
    st.Page(_home, title="SEAM Lens", url_path="home", default=True, visibility="hidden"),
]

access.gate()
page = st.navigation(PAGES)
s = common.settings()
st.sidebar.caption("Results DB")
st.sidebar.code(str(s.db), language=None, wrap_lines=True)
if s.labels_fallback:
    st.sidebar.info("The DB's folder is read-only, so hand labels are saved in your cache instead: "
                    f"{common.md(s.labels)}. Choose the file with `--labels PATH` or `SEAM_LABELS`.")

try:
    page.run()
except common.DBUnavailable as exc:
    common.show_unavailable(exc)
