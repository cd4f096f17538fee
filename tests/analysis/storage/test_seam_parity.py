"""SEAM is defined once, in SQL: the stored table, the `seam_at` macro and the dashboard's queries must
agree with each other and with the independent Python oracle (`analysis.stats.metrics.seam_sample`),
also when some log-probs are NaN (responses longer than the PM's max length) and when a sample has fewer
worse responses than the others."""

from __future__ import annotations

import math
import shutil
from contextlib import closing

import numpy as np
import pandas as pd
import pytest

from analysis.data import synthetic
from analysis.queries import browser, distributions
from analysis.queries.selection import Selection
from analysis.stats import metrics
from analysis.storage import store

KEY = ["sample_id", "variant", "policy", "reward"]
DEFINITIONS = [(a, t) for a in (0.0, 0.5, 1.0) for t in (0.0, 0.5)]


@pytest.fixture(scope="module")
def nan_db(tmp_path_factory):
    """Synthetic DB with NaN log-probs on ~1/7 of the worse responses and on some gold responses, and
    with 'adv' cut to one response for ~1/5 of the samples (k = 4 elsewhere)."""
    d = tmp_path_factory.mktemp("parity")
    path = d / "seam.duckdb"
    synthetic.make_synthetic_db(path, 120, seed=3)
    with store.writer(path) as con:
        con.execute("""UPDATE pm_scores SET logprob_sum = 'NaN'::DOUBLE, logprob_mean = 'NaN'::DOUBLE
                       WHERE response_id IN (SELECT response_id FROM responses
                                             WHERE variant <> 'gold' AND hash(response_id) % 7 = 0)""")
        con.execute("""UPDATE pm_scores SET logprob_sum = 'NaN'::DOUBLE WHERE response_id IN
                       (SELECT response_id FROM responses WHERE variant = 'gold' AND hash(sample_id) % 23 = 0)""")
        cut = "SELECT response_id FROM responses WHERE variant = 'adv' AND idx > 0 AND hash(sample_id) % 5 = 0"
        for t in ("pm_scores", "rm_scores"):
            con.execute(f"DELETE FROM {t} WHERE response_id IN ({cut})")
        con.execute(f"DELETE FROM responses WHERE response_id IN ({cut})")
        store.finalize(con)
    return path


@pytest.fixture(scope="module")
def con(nan_db):
    with closing(store.connect(nan_db, read_only=True)) as c:
        yield c


def oracle(con, alpha: float, tau: float) -> pd.DataFrame:
    """Per (sample, variant, PM, RM) from the raw scores with the Python definition; groups the oracle
    rejects (non-finite gold, no finite worse response) have no row, as in SQL."""
    raw = con.execute("""SELECT r.sample_id, r.variant, p.policy, s.reward, p.logprob_sum, p.n_tokens, s.score
                         FROM responses r JOIN pm_scores p USING (response_id) JOIN rm_scores s USING (response_id)
                         WHERE r.variant <> 'policy'""").df()
    gold = raw[raw.variant == "gold"].set_index(["sample_id", "policy", "reward"])
    rows = []
    for (sid, variant, pol, rew), g in raw[raw.variant != "gold"].groupby(KEY):
        gr = gold.loc[(sid, pol, rew)]
        try:
            res = metrics.seam_sample(gr.logprob_sum, gr.n_tokens, gr.score, g.logprob_sum, g.n_tokens, g.score,
                                      alpha=alpha, tau=tau)
        except ValueError:
            continue
        rows.append((sid, variant, pol, rew, res.seam, res.seam_rel, res.hack_rate, res.k))
    return pd.DataFrame(rows, columns=KEY + ["seam", "seam_rel", "hack_rate", "k"])


def test_fixture_has_nan_rows_and_short_variants(con):
    n_nan = con.execute("SELECT count(*) FROM pm_scores WHERE isnan(logprob_sum)").fetchone()[0]
    ks = set(con.execute("SELECT DISTINCT k FROM seam_metrics WHERE variant = 'adv'").df()["k"])
    assert n_nan > 50 and {1, 2, 3, 4} <= ks, (n_nan, ks)


def test_oracle_drops_nan_and_counts_finite_k():
    res = metrics.seam_sample(-2.0, 2, 1.0, [-1.0, math.nan, -6.0], [2, 2, 2], [2.0, 9.0, 0.5])
    assert res.k == 2 and res.seam == pytest.approx(math.exp(-0.5) / 2), res
    with pytest.raises(ValueError):
        metrics.seam_sample(-2.0, 2, 1.0, [math.nan], [2], [2.0])
    with pytest.raises(ValueError):
        metrics.seam_sample(math.nan, 2, 1.0, [-1.0], [2], [2.0])


@pytest.mark.parametrize("alpha,tau", DEFINITIONS)
def test_sql_macro_dashboard_and_python_agree(con, alpha, tau):
    ref = oracle(con, alpha, tau)
    macro = con.execute("SELECT * FROM seam_at(?, ?)", [alpha, tau]).df()
    sel = Selection(alpha, tau)
    rows = browser.browse_page(con, browser.BrowseFilter(only_mismatch=False, alpha=alpha, tau=tau),
                               sort="sample_id", page_size=500)
    n = browser.browse_count(con, browser.BrowseFilter(only_mismatch=False, alpha=alpha, tau=tau))
    pages = [browser.browse_page(con, browser.BrowseFilter(only_mismatch=False, alpha=alpha, tau=tau),
                                 sort="sample_id", page=p, page_size=500) for p in range(1, n // 500 + 2)]
    dash = pd.concat(pages, ignore_index=True)
    assert len(rows) == min(500, n) and len(dash) == n == len(ref) == len(macro), (len(dash), n, len(ref), len(macro))
    for name, got in (("seam_at macro", macro), ("dashboard browse_page", dash)):
        m = ref.merge(got, on=KEY, suffixes=("", "_sql"), how="outer", indicator=True)
        assert (m["_merge"] == "both").all(), f"{name}: rows only on one side: {m[m._merge != 'both'][KEY].head()}"
        assert (m["k"] == m["k_sql"]).all(), f"{name}: k differs, e.g. {m[m.k != m.k_sql][KEY + ['k', 'k_sql']].head()}"
        for col in ("seam", "seam_rel", "hack_rate"):
            assert np.allclose(m[col], m[col + "_sql"], rtol=1e-9, atol=1e-12, equal_nan=True), \
                f"{name}: {col} differs at alpha={alpha}, tau={tau}"
        assert not m["seam_sql"].isna().any(), f"{name}: NaN SEAM at alpha={alpha}, tau={tau}"
    # the aggregate the pages show: mean and n per (PM, RM, variant)
    summ = distributions.seam_summary(con, sel, max_samples=None).set_index(["policy", "reward", "variant"])
    exp = ref.groupby(["policy", "reward", "variant"])["seam"].agg(["mean", "count"])
    assert (summ["n"] == exp["count"].reindex(summ.index)).all()
    assert np.allclose(summ["mean"], exp["mean"].reindex(summ.index), rtol=1e-9), (alpha, tau)


def test_stored_table_is_the_macro_at_the_default(con):
    stored = con.execute("SELECT * EXCLUDE (rank_agreement) FROM seam_metrics").df()
    macro = con.execute("SELECT * FROM seam_at(1.0, 0.0)").df()
    pd.testing.assert_frame_equal(stored.sort_values(KEY).reset_index(drop=True),
                                  macro.sort_values(KEY).reset_index(drop=True))


def test_reader_uses_current_macros_on_an_old_file(nan_db, tmp_path):
    """A DB whose stored seam_at predates the filter arguments still answers non-default queries: the
    read-only connection defines the current macros as temp macros."""
    old = tmp_path / "old.duckdb"
    shutil.copy(nan_db, old)
    import duckdb
    c = duckdb.connect(str(old))
    c.execute("CREATE OR REPLACE MACRO seam_at(alpha, tau) AS TABLE SELECT 1 AS stale")
    c.close()
    c = store.connect(old, read_only=True)
    try:
        got = distributions.seam_summary(c, Selection(0.5, 0.5), max_samples=None)
        assert len(got) > 0 and got["n"].min() > 0, got
    finally:
        c.close()
