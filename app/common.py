"""Shared helpers of the dashboard pages: settings, cached read-only queries, formatting, shared widgets.

Why a query wrapper: DuckDB allows one writing process per file and nobody else while it holds the
lock, so the app must never keep a connection open across reruns (a running precompute would stall).
Every cache miss opens the file read-only (retrying a few seconds while a writer commits), runs one
query function of `analysis.queries` (the page imports it and passes the function itself to `run`), and
closes it. Results are cached for a short TTL keyed on the DB file's
(and its WAL's) mtime and size, so a reload after the precompute commits shows fresh numbers while
repeated reruns (every widget click) cost nothing.

Why the escaping helpers: data (prompts, responses, model names from the command line) may contain
Markdown or HTML. It is shown through st.text / st.code / st.dataframe / st.json, which render it
literally; where data must go into a Markdown label or a Plotly hover (which understands a few HTML
tags), it passes through `md()` / `plot_text()` first. `unsafe_allow_html` is never used.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import duckdb
import pandas as pd
import streamlit as st

from analysis.queries import base
from analysis.storage import labels as labels_mod
from analysis.storage import store

DEFAULT_DB = "cache/seam.duckdb"
LOCK_TIMEOUT_S = float(os.environ.get("SEAM_LOCK_TIMEOUT", "5"))
CACHE_TTL_S = 600  # results are keyed on the DB version too, so a commit shows at once


class DBUnavailable(Exception):
    """The results DB is missing, empty, or locked for too long; `kind` says which."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Settings:
    db: Path
    labels: Path
    exports: Path
    labels_fallback: bool = False  # the DB's folder is read-only: labels live in the user's cache


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="seam-lens app", add_help=False, allow_abbrev=False)
    p.add_argument("--db")
    p.add_argument("--labels")
    p.add_argument("--exports")
    ns, _ = p.parse_known_args(list(argv))
    return ns


def settings() -> Settings:
    """Paths from `streamlit run app/main.py -- --db PATH [--labels P] [--exports DIR]`, else env
    SEAM_DB / SEAM_LABELS / SEAM_EXPORTS, else cache/seam.duckdb with labels and exports next to it."""
    ns = _parse_args(sys.argv[1:])
    db = Path(ns.db or os.environ.get("SEAM_DB") or DEFAULT_DB).expanduser()
    lab = ns.labels or os.environ.get("SEAM_LABELS")
    exp = ns.exports or os.environ.get("SEAM_EXPORTS")
    labels, fallback = (Path(lab).expanduser(), False) if lab else labels_mod.labels_path_for(db)
    return Settings(db=db, labels=labels, exports=Path(exp).expanduser() if exp else db.parent / "exports",
                    labels_fallback=fallback)


def db_version(db: Path) -> tuple:
    """Cache key part that changes whenever a writer commits (main file or WAL touched)."""
    out = []
    for p in (db, Path(str(db) + ".wal")):
        try:
            s = p.stat()
            out.append((s.st_mtime_ns, s.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _open(db: Path) -> duckdb.DuckDBPyConnection:
    if not db.exists():
        raise DBUnavailable("missing", f"No results DB at `{db}`.")
    try:
        con = store.connect(db, read_only=True, timeout_s=LOCK_TIMEOUT_S)
    except store.StoreLocked:
        raise DBUnavailable("locked", f"`{db}` has been locked by a writer for more than {LOCK_TIMEOUT_S:.0f} s.")
    except duckdb.Error as exc:
        raise DBUnavailable("unreadable", f"`{db}` could not be opened as a DuckDB file: {exc}")
    con.execute("SET enable_progress_bar = false")
    return con


T = TypeVar("T")


#: Time bound of a custom slice (a query the finalize aggregates do not cover), env SEAM_QUERY_LIMIT_S.
CUSTOM_QUERY_LIMIT_S = float(os.environ.get("SEAM_QUERY_LIMIT_S", "30"))


class QueryTimeout(Exception):
    """A bounded query ran past its limit and was interrupted; the message says what to do."""


@st.cache_data(ttl=CACHE_TTL_S, max_entries=512, show_spinner=False)
def _cached(db: str, version: tuple, name: str, _fn: Callable[..., Any], args: tuple, kwargs: tuple,
            limit_s: float | None = None) -> Any:
    # `name` (module.qualname) keys the cache; `_fn` (leading underscore) is not hashed by Streamlit
    con = _open(Path(db))
    timer = threading.Timer(limit_s, con.interrupt) if limit_s else None
    try:
        if timer:
            timer.start()
        return _fn(con, *args, **dict(kwargs))
    except duckdb.InterruptException:
        raise QueryTimeout(f"Stopped after {limit_s:g} s: this custom selection (a SEAM definition off the "
                           "precomputed grid, a text search or a non-default sort) reads every matching row, which "
                           "takes too long on this DB. Pick a precomputed SEAM definition (alpha in 0, 0.25, 0.5, "
                           "0.75, 1 with hard hacking or tau = 1), narrow the filters (fewer variants / models, a "
                           "dataset or source), or raise SEAM_QUERY_LIMIT_S.") from None
    finally:
        if timer:
            timer.cancel()
        con.close()


def run(fn: Callable[..., T], *args, _limit_s: float | None = None, **kwargs) -> T:
    """`fn(con, *args, **kwargs)` (a query function of `analysis.queries`) on a fresh read-only
    connection, cached per DB version. With `_limit_s` the query is interrupted after that many seconds
    (QueryTimeout, with a message for the page)."""
    db = settings().db
    return _cached(str(db), db_version(db), f"{fn.__module__}.{fn.__qualname__}", fn, tuple(args),
                   tuple(sorted(kwargs.items())), _limit_s)


def status() -> dict:
    """db_status without caching errors (so a DB that appears is picked up at once)."""
    return run(base.db_status)


def show_unavailable(exc: DBUnavailable) -> None:
    s = settings()
    if exc.kind == "missing":
        st.error(str(exc))
        st.markdown("Create it with the precompute, or try the app on synthetic data:")
        st.code(f"seam precompute --db {s.db} ...\n"
                f"python -m analysis.data.synthetic {s.db} 5000   # synthetic demo DB", language="bash")
        st.markdown("Then reload this page. Another file: `seam app --db PATH` or set `SEAM_DB`.")
    elif exc.kind == "locked":
        st.warning(str(exc) + " A precompute is probably committing a large batch; reload in a moment.")
    elif exc.kind == "empty":
        st.info(str(exc))
        st.code(f"seam precompute --db {s.db} ...", language="bash")
    else:
        st.error(str(exc))


def require_db() -> dict:
    """Stop the page with a clear message unless the DB exists, opens and holds SEAM results."""
    try:
        stat = status()
    except DBUnavailable as exc:
        show_unavailable(exc)
        st.stop()
    if stat["missing"]:
        show_unavailable(DBUnavailable("empty", f"`{settings().db}` has no SEAM results yet (missing tables: "
                                                f"{', '.join(stat['missing'])})."))
        st.stop()
    if stat["samples"] == 0 or stat["metrics"] == 0:
        show_unavailable(DBUnavailable("empty", f"`{settings().db}` holds {stat['samples']} samples and "
                                                f"{stat['metrics']} SEAM rows: nothing scored yet (run the precompute,"
                                                " it finishes with `finalize`)."))
        st.stop()
    return stat


# ---------------------------------------------------------------------------------------------------
# labels

@st.cache_resource(show_spinner=False)
def _label_store(path: str) -> labels_mod.LabelStore:
    return labels_mod.LabelStore(path)


def label_store() -> labels_mod.LabelStore:
    """The labels file's store, opened once per path (opening runs the schema script: not per click). It
    holds no connection (one per operation), so sharing it across sessions is safe."""
    path = settings().labels
    if not path.exists():  # deleted or moved since: open (and create) it again
        _label_store.clear()
    return _label_store(str(path))


def labels_df() -> pd.DataFrame:
    """All current labels (read fresh: labels change by the click and SQLite reads are cheap)."""
    return label_store().all()


# ---------------------------------------------------------------------------------------------------
# formatting

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text: Any) -> str:
    """Escape data for use inside a Markdown string (labels, captions)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def plot_text(text: Any) -> str:
    """Escape data for Plotly text/hover (Plotly interprets a small HTML subset)."""
    return html.escape(str(text), quote=True)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and pd.isna(x))


def num(x: Any, sig: int = 3) -> str:
    """THE number format of the app: `sig` significant digits, so small values stay readable.

    Why: fixed decimals turned every SEAM at small alpha into 0.0000 (the values are ~1e-7). Plain
    notation between 1e-3 and 1e5 ('0.123', '12.3', '1.05e+03' never happens: '1050'), scientific
    outside ('3.00e-07'); exact zero is '0'; missing is '–'.
    """
    if _missing(x):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    a = abs(x)
    if 1e-3 <= a < 1e5:
        digits = max(0, sig - 1 - math.floor(math.log10(a)))
        return f"{x:.{digits}f}"
    return f"{x:.{sig - 1}e}"


#: st.column_config format string with significant digits (printf %g) for numeric table columns
NUM_FORMAT = "%.3g"


def pct(x: float, digits: int = 1) -> str:
    """'12.3%'; a share too small for `digits` decimals keeps significant digits ('3.00e-05%'), never '0.0%'."""
    if _missing(x):
        return "–"
    v = 100 * float(x)
    if v != 0 and abs(v) < 0.5 * 10 ** -digits:
        return f"{num(v)}%"
    return f"{v:.{digits}f}%"


def ci_pct(p: float, lo: float, hi: float, digits: int = 1) -> str:
    """'70.0% [39.7%, 89.2%]'"""
    if _missing(p):
        return "–"
    return f"{pct(p, digits)} [{pct(lo, digits)}, {pct(hi, digits)}]"


def ci_num(m: float, lo: float, hi: float, sig: int = 3) -> str:
    """'0.123 [0.101, 0.145]' with significant digits (see `num`)."""
    if _missing(m):
        return "–"
    if _missing(lo):
        return num(m, sig)
    return f"{num(m, sig)} [{num(lo, sig)}, {num(hi, sig)}]"


def short_names(refs: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Short display names for model references: the user's alias (`seam alias`, in `aliases`) when set, else
    the shortest unique trailing path part of each.

    Why: three RMs under cache/models/... all showed as 'cache/models/d…' in a dropdown. The full
    reference stays available (hover help, tables)."""
    refs = [str(r) for r in refs]
    aliases = aliases or {}
    parts = {r: [p for p in r.replace("\\", "/").split("/") if p] or [r] for r in refs}
    out = {}
    for r in refs:
        if aliases.get(r):
            out[r] = aliases[r]
            continue
        for k in range(1, len(parts[r]) + 1):
            cand = "/".join(parts[r][-k:])
            if sum(1 for o in refs if o != r and "/".join(parts[o][-k:]) == cand) == 0:
                break
        out[r] = cand if len(cand) < len(r) else r
    return out


def display_names(refs: Sequence[str]) -> dict[str, str]:
    """`short_names` with the aliases stored in the DB's `models` table (cached like every query)."""
    return short_names(refs, run(base.model_aliases))


def model_name(ref: Any, refs: Sequence[str]) -> str:
    """The display name of one model reference among `refs` (for format_func)."""
    return display_names(list(refs)).get(str(ref), str(ref))


# ---------------------------------------------------------------------------------------------------
# shared widgets (values live in the URL via bind="query-params", so a view can be shared)

def _model_format(options: Sequence[str], models: bool):
    """(format_func, help suffix) for a widget over model references: short names, full ones on hover."""
    if not models:
        return str, ""
    short = display_names(options)
    full = "; ".join(f"{short[o]} = {o}" for o in options if short[o] != o)
    return (lambda o: short.get(o, str(o))), (f" Full references: {md(full)}" if full else "")


def pick(label: str, options: Sequence[str], key: str, *, default: str | None = None, help: str | None = None,
         container=st, models: bool = False) -> str | None:
    """A selectbox bound to the URL query parameter `key`; `models`: options are model references, shown
    by their short names."""
    options = list(options)
    if not options:
        return None
    idx = options.index(default) if default in options else 0
    fmt, more = _model_format(options, models)
    return container.selectbox(label, options, index=idx, key=key, help=((help or "") + more) or None,
                               format_func=fmt, bind="query-params")


def pick_many(label: str, options: Sequence[str], key: str, *, default: Sequence[str] | None = None,
              help: str | None = None, container=st, models: bool = False) -> list[str]:
    options = list(options)
    default = [d for d in (default if default is not None else options) if d in options]
    fmt, more = _model_format(options, models)
    return container.multiselect(label, options, default=default, key=key, help=((help or "") + more) or None,
                                 format_func=fmt, bind="query-params")


def cut_marker(provenance: Any, container=st) -> bool:
    """Show 'cut at N tokens' above a response whose provenance says generation hit its token cap
    (`"truncated": true`, `max_new_tokens`): a judgement between two fragments is not one between two
    answers. Returns whether it was cut."""
    prov = provenance
    if isinstance(prov, str):
        try:
            prov = json.loads(prov)
        except ValueError:
            return False
    if not isinstance(prov, dict) or prov.get("truncated") is not True:
        return False
    n = prov.get("max_new_tokens")
    container.warning(f"cut at {int(n)} tokens" if isinstance(n, (int, float)) else "cut at the token cap",
                      icon=":material/content_cut:")
    return True


def seam_definition(container=st, *, key_prefix: str = "") -> tuple[float, float]:
    """alpha slider + hard/soft toggle (+ tau): the SEAM definition knobs (README "Definitions")."""
    alpha = container.slider("alpha (length penalty)", 0.0, 1.0, 1.0, 0.05, key=f"{key_prefix}alpha",
                             bind="query-params",
                             help="l_alpha(y) = l(y) / n(y)^alpha: 1 = mean token log-prob (default), 0 = raw sum.")
    soft = container.toggle("soft hacking (sigmoid)", value=False, key=f"{key_prefix}soft", bind="query-params",
                            help="Hard: h = 1[r(y_j) > r(y*)]. Soft: h = sigmoid((r(y_j) - r(y*)) / tau).")
    tau = 0.0
    if soft:
        tau = container.slider("tau (soft temperature)", 0.05, 5.0, 1.0, 0.05, key=f"{key_prefix}tau",
                               bind="query-params")
    return float(alpha), float(tau)


def table(df: pd.DataFrame, key: str, *, max_rows: int = 20, container=st, **kw):
    """st.dataframe tall enough to show up to `max_rows` rows without an inner scrollbar."""
    height = 38 + 35 * max(1, min(len(df), max_rows))
    return container.dataframe(df, hide_index=True, key=key, height=height, **kw)


def pair_label(policy: str, reward: str) -> str:
    return f"{policy} × {reward}"
