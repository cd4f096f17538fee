"""Partitioned finalize and the dashboard's aggregate tables agree exactly with the one-statement definitions.

Why: finalize evaluates seam_metrics one hash partition of samples at a time to bound its memory, and the
pages read precomputed aggregates instead of scanning seam_metrics. Both are only allowed if they change no
number: compared here against the unpartitioned `seam_at(1.0, 0.0)` + `rank_agreement_at(1.0)` statement
and against the page queries' exact SQL paths.
"""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.data import synthetic
from analysis.queries import distributions, saturation
from analysis.queries.selection import Selection
from analysis.storage import aggregates, store

KEY = ["sample_id", "variant", "policy", "reward"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("parts") / "seam.duckdb"
    synthetic.make_synthetic_db(path, 400, seed=3, rewards=("rm-a", "rm-b", "rm-c"), policy_frac=0.2)
    return path


def _frame(con, sql: str) -> pd.DataFrame:
    return con.execute(sql).df().sort_values(KEY).reset_index(drop=True)


def test_partitioned_finalize_equals_one_statement(db):
    with store.writer(db) as con:
        con.execute("SET threads = 1")   # one summation order on both sides, so equality is exact
        store.finalize(con, part_samples=37)    # 11 partitions of ~37 samples
        parted = _frame(con, "SELECT * FROM seam_metrics")
        whole = _frame(con, """SELECT s.*, ra.rank_agreement FROM seam_at(1.0, 0.0) s
                               LEFT JOIN rank_agreement_at(1.0) ra USING (sample_id, variant, policy, reward)""")
        parts = con.execute("SELECT count(DISTINCT hash(sample_id) % 11) FROM seam_metrics").fetchone()[0]
    assert parts == 11, f"expected samples in all 11 partitions, got {parts}"
    assert len(parted) == len(whole) > 1000, (len(parted), len(whole))
    pd.testing.assert_frame_equal(parted, whole, check_exact=True, check_dtype=False)


def test_rerun_with_one_partition_gives_the_same_aggregates(db):
    tables = ("seam_metrics", "rm_accuracy") + aggregates.TABLES
    snap = {}
    for part_samples in (29, 10**9):
        with store.writer(db) as con:
            con.execute("SET threads = 1")
            store.finalize(con, part_samples=part_samples)
            snap[part_samples] = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in tables}
    for t in tables:
        assert len(snap[29][t]) > 0, f"{t} is empty"
        # per-row tables are identical; sums over rows differ only by summation order (row order on disk)
        pd.testing.assert_frame_equal(snap[29][t], snap[10**9][t], check_exact=False, rtol=1e-12, obj=t)


def test_aggregates_match_the_exact_page_queries(db):
    """The precomputed summary / grid rows / PM axis give what the exact SQL gives (the fallback path)."""
    con = store.connect(db, read_only=True)
    try:
        models = dict(policies=("pm-sft-1k", "pm-sft-10k"), rewards=("rm-a", "rm-c"))   # as the page passes them
        for sel in (Selection(**models), Selection(metric="seam_rel", variants=("adv",), **models),
                    Selection(alpha=0.5, tau=1.0, **models), Selection(alpha=0.0, metric="hack_rate", **models)):
            fast = distributions.seam_report(con, sel, corr_policy="pm-sft-1k", corr_reward="rm-c")
            slow = distributions.seam_report(con, sel, corr_policy="pm-sft-1k", corr_reward="rm-c", max_samples=10**9)
            exact = distributions.seam_summary(con, sel, _rel="seam_metrics") if sel.is_default else slow["summary"]
            assert len(fast["summary"]) == len(exact) == 2 * 2 * (1 if sel.variants else 3), (sel, len(fast["summary"]))
            pd.testing.assert_frame_equal(fast["summary"], exact, rtol=1e-9, check_dtype=False, obj=f"{sel} exact")
            for key in ("summary", "plot", "by_length"):
                pd.testing.assert_frame_equal(fast[key], slow[key], check_exact=False, rtol=1e-9,
                                              check_dtype=False, obj=f"{sel} {key}")
            pd.testing.assert_frame_equal(fast["corr"], slow["corr"], rtol=1e-9, obj=f"{sel} corr")
        for v in ("adv", "contrast", "rejected"):
            fast = saturation.axis_quality(con, variant=v)
            slow = saturation.axis_quality(con, variant=v, max_samples=None)
            pd.testing.assert_frame_equal(fast, slow, check_exact=False, rtol=1e-9, check_dtype=False, obj=v)
            for beta in (0.25, 1.0, 4.0):
                fast = saturation.proxy_grid(con, variant=v, beta=beta)
                slow = saturation.proxy_grid(con, variant=v, beta=beta, max_samples=None)
                assert len(fast) == 2 * 3, fast
                pd.testing.assert_frame_equal(fast, slow, check_exact=False, rtol=1e-9, check_dtype=False,
                                              obj=f"proxy {v} beta={beta}")
    finally:
        con.close()


def endless_query(con):
    """A query that runs for minutes (the stand-in for a custom slice on a huge DB)."""
    return con.execute("SELECT count(*) FROM range(1000000000000) a WHERE hash(a.range) = 7").fetchall()


def test_custom_slice_is_interrupted_after_its_time_bound(db, monkeypatch):
    """The app's bounded query path stops a long query with a message instead of hanging the page."""
    import time

    from app import common
    monkeypatch.setenv("SEAM_DB", str(db))
    t0 = time.perf_counter()
    with pytest.raises(common.QueryTimeout, match=r"Stopped after 0.5 s.*precomputed SEAM definition"):
        common.run(endless_query, _limit_s=0.5)
    took = time.perf_counter() - t0
    assert took < 20, f"the interrupt took {took:.1f}s to land"
    # the same connection path still answers a normal query afterwards
    assert common.run(distributions.seam_summary, Selection()).shape[0] > 0


def test_overview_counts_stay_live_while_rows_are_added(db, tmp_path):
    """Finalize's count tables serve the overview only while the base tables still hold the counts they
    summarise: rows a running precompute adds show at once."""
    import shutil

    from analysis.queries import base, overview
    copy = tmp_path / "live.duckdb"
    shutil.copy(db, copy)
    con = store.connect(copy, read_only=True)
    before = overview.variant_summary(con).set_index("variant")["responses"].to_dict()
    models = set(overview.models_summary(con)["model"])
    assert base._counts_current(con, "variant_counts"), "count tables should be current right after finalize"
    con.close()
    with store.writer(copy) as w:     # what a precompute does between finalizes
        store.insert(w, "responses", [("extra-r", "extra-s", "adv", 0, "new text", None)])
        store.insert(w, "rm_scores", [("extra-r", "rm-new", 0.5)])
    con = store.connect(copy, read_only=True)
    after = overview.variant_summary(con).set_index("variant")["responses"].to_dict()
    opts = base.filter_options(con)
    con.close()
    assert after["adv"] == before["adv"] + 1, (before, after)
    assert "rm-new" in opts["rewards"] and "rm-new" not in models, opts["rewards"]
