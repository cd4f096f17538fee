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

st.set_page_config(page_title="SEAM Lens", page_icon=":material/join_inner:", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "overview.py", title="Overview", icon=":material/dashboard:", url_path="overview",
            default=True),
    st.Page(HERE / "views" / "saturation.py", title="Saturation", icon=":material/grid_on:", url_path="saturation"),
    st.Page(HERE / "views" / "distributions.py", title="SEAM distributions", icon=":material/bar_chart:",
            url_path="distributions"),
    st.Page(HERE / "views" / "browser.py", title="Mismatch browser", icon=":material/search:", url_path="browser"),
    st.Page(HERE / "views" / "spotcheck.py", title="Spot-check", icon=":material/rule:", url_path="spotcheck"),
    st.Page(HERE / "views" / "export.py", title="Filtering & export", icon=":material/filter_alt:",
            url_path="export"),
    st.Page(HERE / "views" / "prompt_map.py", title="Prompt map", icon=":material/scatter_plot:",
            url_path="prompt-map"),
    st.Page(HERE / "views" / "evidence.py", title="Evidence", icon=":material/verified:", url_path="evidence"),
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
