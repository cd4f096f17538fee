"""Property tests of the query layer: any filter value a user can type or put in a URL (quotes, `%`,
`_`, backslashes, regex metacharacters, odd Unicode) travels as a SQL parameter, so it never raises
(except a clean ValueError for an invalid regular expression), never changes the shape of the result
(same type, same columns) and is matched literally (a `%` is not a wildcard)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.storage import store
# The query layer's public names, imported in one place (the module is being split by page).
from analysis.queries.browser import BrowseFilter, browse_count, browse_page
from analysis.queries.filtering import FilterSpec, filter_report

SETTINGS = settings(derandomize=True, max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SPECIAL = list("'\"%_\\*+?.()[]{}|^$-/;:`~!<>#&=,@ \t\n") + ["''", "%%", "\\'", "--", "/*", "*/", "\\\\", "é", "\u200b",
                                                             "\u202e", "😀", "NULL", "'; DROP TABLE samples; --"]
junk = st.lists(st.sampled_from(SPECIAL) | st.text(max_size=3), max_size=8).map("".join)


@pytest.fixture(scope="module")
def db(synthetic_db):
    path = synthetic_db(60, seed=4, hand_rows=False)
    con = store.connect(path, read_only=True)
    opts = {
        "variants": [r[0] for r in con.execute("SELECT DISTINCT variant FROM seam_metrics ORDER BY 1").fetchall()],
        "policies": [r[0] for r in con.execute("SELECT DISTINCT policy FROM seam_metrics ORDER BY 1").fetchall()],
        "rewards": [r[0] for r in con.execute("SELECT DISTINCT reward FROM seam_metrics ORDER BY 1").fetchall()],
        "datasets": [r[0] for r in con.execute("SELECT DISTINCT dataset FROM samples ORDER BY 1").fetchall()],
        "sources": [r[0] for r in con.execute("SELECT DISTINCT source FROM samples ORDER BY 1").fetchall()],
        "texts": [(p + "\n" + g).lower() for p, g in con.execute("SELECT prompt, gold FROM samples").fetchall()],
    }
    ref_page = browse_page(con, BrowseFilter(only_mismatch=False))
    spec = FilterSpec(variant=opts["variants"][0], policy=opts["policies"][0], reward=opts["rewards"][0])
    ref_report = filter_report(con, spec)
    yield con, opts, ref_page, ref_report
    con.close()


def value_or_junk(real: list[str]):
    return st.sampled_from(real) | junk


@SETTINGS
@given(data=st.data(), search=junk, regex=st.booleans())
def test_browse_filters_never_error_or_change_shape(db, data, search, regex):
    con, opts, ref_page, _ = db
    pick = lambda key: tuple(data.draw(st.lists(value_or_junk(opts[key]), max_size=3), label=key))  # noqa: E731
    f = BrowseFilter(variants=pick("variants"), policies=pick("policies"), rewards=pick("rewards"),
                     datasets=pick("datasets"), sources=pick("sources"), search=search, regex=regex,
                     only_mismatch=data.draw(st.booleans(), label="only_mismatch"),
                     sample_ids=tuple(data.draw(st.lists(junk, max_size=2), label="sample_ids")))
    try:
        n = browse_count(con, f)
        page = browse_page(con, f, page_size=10)
    except ValueError as exc:
        assert regex and "invalid regular expression" in str(exc), f"{f!r} raised {exc!r}"
        return
    assert isinstance(n, int) and n >= 0, (f, n)
    assert isinstance(page, pd.DataFrame) and list(page.columns) == list(ref_page.columns), (f, list(page.columns))
    assert len(page) == min(n, 10), f"page of {len(page)} rows for a count of {n}: {f!r}"


@SETTINGS
@given(search=st.lists(st.sampled_from(list("%_\\'\"[]()*.^$|?+{}")) | st.text("abcxyz ", max_size=2),
                       min_size=1, max_size=6).map("".join))
def test_literal_search_is_literal(db, search):
    """Plain (non-regex) search finds a sample iff its prompt or gold contains the string: '%' and '_'
    are not wildcards, a backslash escapes nothing. Counted over every row (only_mismatch off)."""
    con, opts, _, _ = db
    f = BrowseFilter(search=search, only_mismatch=False)
    expected_hit = any(search.lower() in t for t in opts["texts"])
    n = browse_count(con, f)
    assert (n > 0) == expected_hit, f"search {search!r}: {n} rows, a literal match exists: {expected_hit}"


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(["top", "bottom", "random"]), q=st.floats(0, 0.9),
       metric=st.sampled_from(["seam", "seam_rel", "hack_rate"]), seed=st.integers(0, 2**31 - 1),
       by=st.sampled_from(["source", "dataset"]))
def test_filter_report_never_errors_or_changes_shape(db, data, mode, q, metric, seed, by):
    con, opts, _, ref = db
    spec = FilterSpec(variant=data.draw(value_or_junk(opts["variants"]), label="variant"),
                      policy=data.draw(value_or_junk(opts["policies"]), label="policy"),
                      reward=data.draw(value_or_junk(opts["rewards"]), label="reward"),
                      mode=mode, q=q, metric=metric, seed=seed,
                      sample_ids=tuple(data.draw(st.lists(junk, max_size=3), label="sample_ids")))
    out = filter_report(con, spec, by=by)
    assert set(out) == set(ref), (spec, sorted(out))
    for key, df in out.items():
        assert isinstance(df, pd.DataFrame), (key, type(df))
        want = [c if c != "source" else by for c in ref[key].columns] if key == "composition" else list(ref[key].columns)
        assert list(df.columns) == want, f"{key}: columns {list(df.columns)} != {want} for {spec!r}"
