"""Who may open the dashboard: loopback by default, a login when it is exposed.

Why here and not in each page: the gate runs once in `app/main.py` before any page, so labels, exports
and data are behind it on every page alike.

- The server listens on 127.0.0.1 unless the user asks for another address (`seam app --host`,
  `--server.address`; `app/.streamlit/config.toml` sets the default for `streamlit run app/main.py`).
- `[auth]` configured in Streamlit's secrets.toml (OIDC) -> Streamlit's own `st.login`.
- else env SEAM_APP_PASSWORD -> a shared-secret password form (compared in constant time); the
  session stays logged in until the browser tab is closed.
- exposed (a non-loopback address was asked for) with neither -> a warning in the sidebar.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PASSWORD_ENV = "SEAM_APP_PASSWORD"


def exposed() -> bool:
    """True when the server was told to listen on a non-loopback address."""
    addr = st.get_option("server.address")
    return bool(addr) and addr not in LOOPBACK


def _oidc_configured() -> bool:
    try:
        return bool(st.secrets.load_if_toml_exists()) and "auth" in st.secrets
    except Exception:  # an unreadable secrets file is Streamlit's to report; no OIDC then
        return False


def gate() -> None:
    """Stop this run unless the visitor is allowed in (see the module docstring)."""
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("SEAM Lens")
            st.button("Log in", on_click=st.login, type="primary", key="oidc_login")
            st.stop()
        return
    secret = os.environ.get(PASSWORD_ENV)
    if secret:
        if st.session_state.get("_seam_authed"):
            return
        st.title("SEAM Lens")
        with st.form("seam_login"):
            given = st.text_input("password", type="password", key="seam_password")
            sent = st.form_submit_button("Log in", type="primary")
        if sent and hmac.compare_digest(given.encode(), secret.encode()):
            st.session_state["_seam_authed"] = True
            st.session_state.pop("seam_password", None)
            st.rerun()
        if sent:
            st.error("Wrong password.")
        st.stop()
    if exposed():
        st.sidebar.warning(f"This dashboard listens on {st.get_option('server.address')} without a password: "
                           f"anyone who reaches it can read the data and write labels and exports. "
                           f"Restart it with {PASSWORD_ENV} set.")
