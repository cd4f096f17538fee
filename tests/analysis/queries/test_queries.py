"""analysis.queries (one module per page) on a real (small) DuckDB results file: numbers checked against independent
computations (pandas / numpy / scipy on the raw tables, or hand values), parameterization checked
against hostile input, and the fast SQL paths checked against the reference macros in metrics.sql."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.queries import base, browser, distributions, filtering, overview, prompt_map, saturation, spotcheck
from analysis.queries.selection import Selection
from analysis.stats.metrics import t_interval, wilson
from analysis.storage import aggregates, store
from analysis.data import synthetic


@pytest.fixture(scope="module")
def db(synthetic_db):
    return synthetic_db(300, seed=1)


@pytest.fixture()
def con(db):
    c = store.connect(db, read_only=True)
    yield c
    c.close()


def raw(con, sql, params=None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


# ------------------------------------------------------------------------------------------- stats

def test_wilson_hand_values():
    w = wilson(7, 10)
    assert w.p == 0.7 and w.lo == pytest.approx(0.39678, abs=1e-4) and w.hi == pytest.approx(0.89221, abs=1e-4)
    ci = stats.binomtest(7, 10).proportion_ci(method="wilson")
    assert (w.lo, w.hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert wilson(0, 10).lo == 0.0 and all(math.isnan(v) for v in (wilson(0, 0).p, wilson(0, 0).lo, wilson(0, 0).hi))


def test_t_interval_matches_scipy():
    lo, hi = t_interval(0.1, 0.2, 10)
    half = stats.t.ppf(0.975, 9) * 0.2 / math.sqrt(10)
    assert (lo, hi) == pytest.approx((0.1 - half, 0.1 + half))
    assert all(math.isnan(v) for v in t_interval(1.0, 0.0, 1))


# ------------------------------------------------------------------------------------------- overview

def test_rm_accuracy_against_independent_count(con):
    acc = overview.rm_accuracy(con)
    r = raw(con, """SELECT r.sample_id, r.variant, s.reward, s.score FROM responses r JOIN rm_scores s USING (response_id)
                    WHERE r.variant <> 'policy'""")
    gold = r[r.variant == "gold"][["sample_id", "reward", "score"]].rename(columns={"score": "g"})
    j = r[r.variant != "gold"].merge(gold, on=["sample_id", "reward"])
    for (reward, variant), g in j.groupby(["reward", "variant"]):
        row = acc[(acc.reward == reward) & (acc.variant == variant)].iloc[0]
        assert row.n == len(g) and row.correct == (g.g > g.score).sum() and row.wrong == (g.g < g.score).sum()
        w = wilson(row.correct, row.n)
        assert (row.accuracy, row.accuracy_lo, row.accuracy_hi) == pytest.approx((w.p, w.lo, w.hi))


def test_hand_rows_headline_numbers(con):
    exp = synthetic.hand_expected()
    acc = overview.rm_accuracy(con).set_index("reward").loc[synthetic.HAND_REWARD]
    assert (acc.n, acc.correct, acc.wrong) == (exp["n"], exp["correct"], exp["wrong"])
    assert acc.accuracy_lo == pytest.approx(0.39678, abs=1e-4)
    summ = distributions.seam_summary(con, Selection(1.0, 0.0, policies=[synthetic.HAND_POLICY]))
    row = summ.iloc[0]
    assert row.n == 10 and row["mean"] == pytest.approx(exp["mean_seam"])
    vals = [math.exp(r[2]) if r[1] > r[0] else 0.0 for r in synthetic.HAND_ROWS]
    half = stats.t.ppf(0.975, 9) * np.std(vals, ddof=1) / math.sqrt(10)
    assert row.lo == 0.0  # t interval clipped at 0: SEAM cannot be negative
    assert row.hi == pytest.approx(exp["mean_seam"] + half)


def test_contents_queries(con):
    counts = dict(zip(*base.table_counts(con)[["table", "rows"]].values.T))
    assert counts["samples"] == 310 and counts["seam_metrics"] == raw(con, "SELECT count(*) n FROM seam_metrics").n[0]
    ds = overview.datasets_summary(con).set_index("dataset")
    assert ds.loc["hand", "samples"] == 10 and ds["rejects"].sum() == raw(con, "SELECT count(*) n FROM rejects").n[0]
    assert set(overview.variant_summary(con)["variant"]) == {"gold", "adv", "contrast", "rejected", "policy"}
    assert overview.reject_reasons(con)["n"].sum() == 3
    assert overview.recent_runs(con, 1)["status"].tolist() == ["done"]
    opts = base.filter_options(con)
    assert opts["policies"][:2] == ["pm-sft-1k", "pm-sft-10k"]  # registration order, weakest first
    assert base.db_status(con) == {"missing": [], "samples": 310, "metrics": counts["seam_metrics"]}


def test_db_status_of_an_empty_file(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    c = store.connect(path, read_only=True)
    try:
        assert set(base.db_status(c)["missing"]) == set(base.REQUIRED_TABLES)
        assert saturation.rlhf_grid(c).empty and saturation.saturation_grid(c).empty
    finally:
        c.close()


# ------------------------------------------------------------------------------------------- SEAM paths

@pytest.mark.parametrize("alpha,tau", [(1.0, 0.0), (0.5, 0.0), (0.0, 0.7), (1.0, 0.25)])
def test_filtered_selection_equals_filtering_the_macro(con, alpha, tau):
    """A Selection's filters, passed into seam_at() as arguments, keep exactly the rows an outer WHERE on
    the unfiltered macro keeps, with the same values."""
    sel = Selection(alpha, tau, variants=("adv", "rejected"), policies=("pm-sft-1k", "pm-hand"), rewards=("rm-10k",))
    params: dict = {}
    mine = base._df(con, f"SELECT * FROM {sel.source(params)} WHERE {sel.where(params)}",
                    params)
    ref = raw(con, "SELECT * FROM seam_at(?, ?) WHERE variant IN ('adv', 'rejected') AND policy IN ('pm-sft-1k', "
                   "'pm-hand') AND reward = 'rm-10k'", [alpha, tau])
    key = ["sample_id", "variant", "policy", "reward"]
    m = mine.merge(ref, on=key, suffixes=("", "_ref"))
    assert len(m) == len(ref) == len(mine) == 600, (len(m), len(ref), len(mine))  # 300 samples x adv, rejected
    for col in ("seam", "seam_rel", "hack_rate", "mean_tokens"):
        assert np.allclose(m[col], m[col + "_ref"], equal_nan=True), col
    assert (m["k"] == m["k_ref"]).all() and (m["rm_prefers_gold"] == m["rm_prefers_gold_ref"]).all()


def test_default_definition_reads_seam_metrics(con):
    a = distributions.seam_summary(con, Selection(1.0, 0.0))
    b = raw(con, "SELECT policy, reward, variant, avg(seam) AS mean, count(*) AS n FROM seam_at(1.0, 0.0) GROUP BY ALL")
    m = a.merge(b, on=["policy", "reward", "variant"])
    assert len(m) == len(a) and np.allclose(m["mean_x"], m["mean_y"]) and (m["n_x"] == m["n_y"]).all()


def test_nondefault_definition_samples_large_dbs(con):
    sel = Selection(0.5, 0.3, policies=["pm-sft-1k"])
    full = distributions.seam_summary(con, sel, max_samples=None)
    samp = distributions.seam_summary(con, sel, max_samples=100)
    assert (full["n"] == 300).all()
    assert (samp["n"] < 200).all() and (samp["n"] > 40).all()
    again = distributions.seam_summary(con, sel, max_samples=100)
    pd.testing.assert_frame_equal(samp, again)  # the hash sample is deterministic


# ------------------------------------------------------------------------------------------- distributions

def test_histogram_bins_cover_all_values(con):
    h = distributions.seam_histogram(con, Selection(variants=["adv"], policies=["pm-sft-1k"], rewards=["rm-10k"]), bins=12)
    assert h["count"].sum() == 300 == h["group_n"].iloc[0]
    vals = raw(con, "SELECT seam FROM seam_metrics WHERE variant='adv' AND policy='pm-sft-1k' AND reward='rm-10k'").seam
    assert h["bin_lo"].min() == pytest.approx(vals.min()) and h["bin_hi"].max() == pytest.approx(vals.max())
    counts, _ = np.histogram(vals, bins=12, range=(vals.min(), vals.max()))
    assert list(h.set_index("bin")["count"].reindex(range(12), fill_value=0)) == list(counts)
    nz = distributions.seam_histogram(con, Selection(variants=["adv"], policies=["pm-sft-1k"], rewards=["rm-10k"]),
                                     nonzero_only=True)
    assert nz["count"].sum() == (vals != 0).sum() and nz["zeros"].iloc[0] == (vals == 0).sum()


def test_log_bins_spread_values_that_span_decades():
    """Values 1e-7 .. 1e-1 (SEAM at small alpha): equal-width bins put all but the top decade in bin 0 (the
    histogram on a log axis looked like one bar); log-spaced bins give each decade its own bin, with
    geometric edges from the smallest to the largest value, and zeros left out."""
    c = duckdb.connect()
    vals = [10.0 ** -k for k in range(1, 8) for _ in range(3)] + [0.0, 0.0]
    c.execute("CREATE TABLE v AS SELECT 'g' AS grp, unnest($v::DOUBLE[]) AS x", {"v": vals})

    def hist(log):
        ctes, sel = base.binned_sql("src", groups=("grp",), aggs="count(*) AS count", log=log)
        return c.execute(f"WITH src AS (SELECT * FROM v), {ctes} {sel}", {"bins": 6}).df()

    lin, log = hist(False), hist(True)
    assert lin["count"].max() >= 20, f"linear bins should lump the small values into bin 0: {lin.to_dict('records')}"
    assert list(log["count"]) == [3, 3, 3, 3, 3, 6], f"log bins, one decade each: {log.to_dict('records')}"
    assert log["bin_lo"].iloc[0] == pytest.approx(1e-7) and log["bin_hi"].iloc[-1] == pytest.approx(0.1)
    ratios = (log["bin_hi"] / log["bin_lo"]).to_numpy()
    assert np.allclose(ratios, 10.0), f"edges not geometric: {ratios}"
    c.close()


def test_histogram_log_bins_at_small_alpha(con):
    """At alpha = 0.1 the log-binned histogram spreads the positive values over several bins and counts every
    one of them once (zeros are reported in `zeros`, not binned)."""
    sel = Selection(alpha=0.1, variants=["adv"], policies=["pm-sft-1k"], rewards=["rm-10k"])
    h = distributions.seam_histogram(con, sel, bins=20, log_bins=True)
    n, zeros = int(h["group_n"].iloc[0]), int(h["zeros"].iloc[0])
    assert h["count"].sum() == n - zeros, f"binned {h['count'].sum()} of {n - zeros} positive values"
    used = int((h["count"] > 0).sum())
    assert used >= 3, f"log bins put the values in {used} bin(s): {h.to_dict('records')}"
    assert (h["bin_lo"] > 0).all() and (h["bin_hi"] > h["bin_lo"]).all()


def test_quantiles_match_numpy(con):
    q = distributions.seam_quantiles(con, Selection(variants=["contrast"], policies=["pm-sft-10k"], rewards=["rm-100k"]),
                                     n_q=11)
    vals = raw(con, "SELECT seam FROM seam_metrics WHERE variant='contrast' AND policy='pm-sft-10k' "
                    "AND reward='rm-100k'").seam
    assert np.allclose(q["value"], np.quantile(vals, np.linspace(0, 1, 11)))
    assert (q["n"] == 300).all()


def test_sample_and_correlation(con):
    s = distributions.seam_sample(con, Selection(policies=["pm-sft-1k"]), max_rows=50)
    assert len(s) == 50 and set(s.columns) == {"variant", "policy", "reward", "value"}
    corr, n = distributions.variant_correlation(con, policy="pm-sft-1k", reward="rm-10k", max_rows=10_000)
    piv = raw(con, "SELECT sample_id, variant, seam FROM seam_metrics WHERE policy='pm-sft-1k' AND reward='rm-10k'") \
        .pivot(index="sample_id", columns="variant", values="seam")
    assert n == 300
    pd.testing.assert_frame_equal(corr, piv.corr(method="spearman")[corr.columns].loc[corr.index],
                                  check_names=False)
    _, n_small = distributions.variant_correlation(con, policy="pm-sft-1k", reward="rm-10k", max_rows=40)
    assert n_small == 40


def test_seam_by_length(con):
    bl = distributions.seam_by_length(con, Selection(variants=["adv"]), policy="pm-sft-1k", reward="rm-10k", bins=5)
    assert bl["n"].sum() == 300 and (bl["lo"] <= bl["mean"]).all()


# ------------------------------------------------------------------------------------------- browser

def test_browse_paging_sorting_and_count(con):
    f = browser.BrowseFilter(variants=("adv",), policies=("pm-sft-1k",), rewards=("rm-10k",))
    total = browser.browse_count(con, f)
    expect = raw(con, "SELECT sample_id, seam FROM seam_metrics WHERE variant='adv' AND policy='pm-sft-1k' "
                      "AND reward='rm-10k' AND hack_rate > 0 ORDER BY seam DESC, sample_id")
    assert total == len(expect)
    pages = pd.concat([browser.browse_page(con, f, page=p, page_size=7) for p in range(1, 4)])
    assert list(pages["sample_id"]) == list(expect["sample_id"][:21])
    asc = browser.browse_page(con, f, sort="seam", descending=False, page_size=5)
    assert list(asc["seam"]) == sorted(expect["seam"])[:5]
    assert browser.browse_count(con, browser.BrowseFilter(only_mismatch=False)) == raw(con, "SELECT count(*) n FROM seam_metrics").n[0]


def test_browse_filters(con):
    f = browser.BrowseFilter(datasets=("hand",), only_mismatch=False)
    assert browser.browse_count(con, f) == 10
    assert browser.browse_count(con, browser.BrowseFilter(datasets=("hand",), seam_min=0.2)) == 3  # 0.5, 0.25, 0.25
    assert browser.browse_count(con, browser.BrowseFilter(datasets=("hand",), seam_min=0.3, seam_max=0.6)) == 1
    assert browser.browse_count(con, browser.BrowseFilter(search="HAND PROMPT 7", only_mismatch=False)) == 1
    assert browser.browse_count(con, browser.BrowseFilter(search=r"hand prompt [0-4]\?", regex=True, only_mismatch=False)) == 5
    srcs = browser.BrowseFilter(sources=("coding",), only_mismatch=False, variants=("adv",), policies=("pm-sft-1k",),
                          rewards=("rm-10k",))
    assert browser.browse_count(con, srcs) == raw(con, "SELECT count(*) n FROM samples WHERE source='coding'").n[0]
    ids = tuple(raw(con, "SELECT sample_id FROM samples ORDER BY sample_id LIMIT 3").sample_id)
    sel = browser.browse_page(con, browser.BrowseFilter(sample_ids=ids, only_mismatch=False, variants=("adv",),
                                            policies=("pm-sft-1k",), rewards=("rm-10k",)))
    assert set(sel["sample_id"]) == set(ids)


def test_browse_user_input_is_data_not_sql(con):
    for evil in ["'; DROP TABLE samples; --", "x' OR '1'='1", "%", "_", "\\"]:
        assert browser.browse_count(con, browser.BrowseFilter(search=evil, only_mismatch=False)) == 0
    assert raw(con, "SELECT count(*) n FROM samples").n[0] == 310
    with pytest.raises(ValueError, match="invalid regular expression"):
        browser.browse_count(con, browser.BrowseFilter(search="(unclosed", regex=True))
    with pytest.raises(ValueError):
        browser.browse_page(con, browser.BrowseFilter(), sort="seam; DROP TABLE samples")


def test_sample_detail(con):
    info = browser.sample_info(con, "hand-07")
    assert info["prompt"] == "Hand prompt 7?" and browser.sample_info(con, "nope") is None
    r = browser.sample_responses(con, "hand-07", variant="rejected", policy="pm-hand", reward="rm-hand")
    assert list(r["variant"]) == ["gold", "rejected"] and list(r["hack"]) == [False, True]
    assert r.set_index("variant").loc["rejected", "logprob_mean"] == pytest.approx(math.log(0.5))
    sc = browser.response_scores(con, ["hand-07-gold", "hand-07-rejected"])
    assert set(sc["role"]) == {"policy", "reward"} and len(sc) == 4
    assert set(browser.responses_by_ids(con, ["hand-07-gold"])["text"]) == {"Hand gold answer 7."}


# ------------------------------------------------------------------------------------------- spot-check

def test_spotcheck_pairs_deterministic_and_well_formed(con):
    a = spotcheck.spotcheck_pairs(con, kind="policy", n=20, seed=5)
    b = spotcheck.spotcheck_pairs(con, kind="policy", n=20, seed=5)
    c = spotcheck.spotcheck_pairs(con, kind="policy", n=20, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["a_id"]) != list(c["a_id"])
    assert len(a) == 20 and (a["a_id"] < a["b_id"]).all() and a["sample_id"].is_unique
    r = raw(con, "SELECT response_id, sample_id, variant, json_extract_string(provenance, '$.generator') g FROM responses") \
        .set_index("response_id")
    assert (r.loc[a["a_id"], "sample_id"].values == a["sample_id"].values).all()
    assert (r.loc[a["a_id"], "variant"] == "policy").all() and (r.loc[a["b_id"], "variant"] == "policy").all()
    assert (r.loc[a["a_id"], "g"].values == r.loc[a["b_id"], "g"].values).all()  # same PM wrote both
    assert 0 < a["swap"].sum() < 20
    d = spotcheck.spotcheck_pairs(con, kind="dataset", variant="adv", n=16, seed=1, stratify="dataset")
    kinds = {tuple(sorted((r.loc[x, "variant"], r.loc[y, "variant"]))) for x, y in zip(d.a_id, d.b_id)}
    assert kinds == {("adv", "gold")}
    assert d["dataset"].value_counts().to_dict() == {"synth-help": 8, "synth-qa": 8}
    g = spotcheck.spotcheck_pairs(con, kind="policy", n=10, seed=1, generator="pm-sft-10k")
    assert (r.loc[g["a_id"], "g"] == "pm-sft-10k").all()


def test_label_mismatch_on_hand_pairs(con):
    # people agree with the dataset on all 10 hand pairs: the RM is wrong on 3 of them
    labels = pd.DataFrame({"a_id": [f"hand-{i:02d}-gold" for i in range(10)],
                           "b_id": [f"hand-{i:02d}-rejected" for i in range(10)], "label": "a", "kind": "dataset"})
    labels.loc[9, "label"] = "tie"
    mm = spotcheck.label_mismatch(con, labels).set_index("reward").loc["rm-hand"]
    assert (mm.n, mm.wrong, mm.label_ties, mm.rm_ties) == (9, 2, 1, 0)  # hand-09 (an RM error) is now a tie
    assert (mm.mismatch, mm.mismatch_lo) == pytest.approx((wilson(2, 9).p, wilson(2, 9).lo))
    dis = spotcheck.label_disagreements(con, labels, reward="rm-hand")
    assert set(dis["sample_id"]) == {"hand-07", "hand-08"}
    assert spotcheck.label_mismatch(con, labels.iloc[0:0]).empty


# ------------------------------------------------------------------------------------------- saturation

def test_proxy_grid_matches_python_on_hand_rows(con):
    g = saturation.proxy_grid(con, variant="rejected", beta=0.5, max_samples=None)
    row = g[(g.policy == "pm-hand") & (g.reward == "rm-hand")].iloc[0]
    pg = [1 / (1 + math.exp((lp + r / 0.5) - (-0.5 + gs / 0.5))) for gs, r, lp in synthetic.HAND_ROWS]
    assert row.n == 10 and row.quality == pytest.approx(np.mean(pg))
    assert 0 <= row.lo <= row.quality <= row.hi <= 1


def test_axis_quality_from_base_tables(con):
    ax = saturation.axis_quality(con, variant="adv", max_samples=None)
    rm = ax[ax.role == "reward"].set_index("model")
    acc = overview.rm_accuracy(con).query("variant == 'rejected'").set_index("reward")
    assert rm.loc["rm-10k", "quality"] == pytest.approx(acc.loc["rm-10k", "accuracy"])
    assert set(ax[ax.role == "policy"]["model"]) == {"pm-sft-1k", "pm-sft-10k"}


def test_experiment_relations_when_present(tmp_path):
    path = synthetic.make_synthetic_db(tmp_path / "x.duckdb", 40, seed=2)
    with store.writer(path) as c:
        c.execute("""CREATE TABLE saturation_grid (run_id VARCHAR, policy VARCHAR, reward VARCHAR, policy_label VARCHAR,
                     reward_label VARCHAR, policy_rank INTEGER, reward_rank INTEGER, metric VARCHAR, n INTEGER,
                     quality DOUBLE, quality_lo DOUBLE, quality_hi DOUBLE, gain DOUBLE, gain_lo DOUBLE, gain_hi DOUBLE)""")
        c.execute("INSERT INTO saturation_grid VALUES ('r', 'pm-sft-1k', 'rm-10k', 'small', 'rm-a', 0, 0, 'bon_gold', 40,"
                  " 0.5, 0.4, 0.6, 0.1, 0.0, 0.2)")
        c.execute("CREATE TABLE model_quality (run_id VARCHAR, model VARCHAR, role VARCHAR, label VARCHAR, metric VARCHAR,"
                  " value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER)")
        c.execute("INSERT INTO model_quality VALUES ('r', 'rm-10k', 'reward', 'rm-a', 'acc:128', 0.7, 0.6, 0.8, 128),"
                  " ('r', 'pm-sft-1k', 'policy', 'small', 'judge_mean', 0.3, 0.2, 0.4, 40)")
    c = store.connect(path, read_only=True)
    try:
        sg = saturation.saturation_grid(c)
        assert sg.loc[0, "gain"] == 0.1 and sg.loc[0, "policy_label"] == "small"
        ax = saturation.axis_quality(c, variant="adv").set_index("model")
        assert ax.loc["rm-10k", "metric"] == "acc:128" and ax.loc["pm-sft-1k", "quality"] == 0.3
        assert base.experiment_table(c, "model_quality").shape[0] == 2
        assert base.experiment_table(c, "selection_results").empty
        with pytest.raises(ValueError):
            base.experiment_table(c, "samples; DROP TABLE samples")
    finally:
        c.close()


@pytest.mark.parametrize("table,column", [("responses", "sample_id"), ("pm_scores", "response_id"),
                                          ("rm_scores", "response_id")])
def test_rows_by_key_returns_exactly_the_keys_rows(con, table, column):
    """The index-only lookup behind the detail panel and the spot-check reveal: every row of each key, none of
    a missing key, a repeated key once, an empty key list as an empty frame with the columns."""
    keys = list(raw(con, f"SELECT DISTINCT {column} AS k FROM {table} ORDER BY 1 LIMIT 3")["k"])
    want = raw(con, f"SELECT count(*) AS n FROM {table} WHERE list_contains(?, {column})", [keys])["n"][0]
    rows = base.rows_by_key(con, table, column, keys + [keys[0], "no-such-key"])
    assert len(rows) == want and set(rows[column]) == set(keys), (len(rows), want, set(rows[column]))
    empty = base.rows_by_key(con, table, column, [], f"{column}, 1 AS one")
    assert empty.empty and list(empty.columns) == [column, "one"], empty


# ------------------------------------------------------------------------------------------- filter & map

@pytest.mark.parametrize("mode", ["top", "bottom", "random"])
def test_filter_split(con, mode):
    spec = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode=mode, q=0.2, seed=3)
    rep = filtering.filter_report(con, spec, bins=10)
    summ = rep["summary"].set_index("group")
    assert summ.loc["all", "n"] == 300 and summ.loc["dropped", "n"] == 60 and summ.loc["kept", "n"] == 240
    if mode == "top":
        assert summ.loc["dropped", "min"] >= summ.loc["kept", "max"]
    if mode == "bottom":
        assert summ.loc["dropped", "max"] <= summ.loc["kept", "min"]
    pd.testing.assert_frame_equal(rep["summary"], filtering.filter_summary(con, spec))
    pd.testing.assert_frame_equal(rep["hist_gold_reward"], filtering.filter_histogram(con, spec, "gold_reward", bins=10))
    comp = rep["composition"]
    assert comp.groupby("group")["share"].sum().round(9).eq(1).all()
    assert comp[comp.group == "dropped"]["n"].sum() == 60


@pytest.mark.parametrize("mode", ["top", "random"])
def test_filter_preview_from_stored_rows_equals_exact_split_on_a_small_db(con, mode):
    """Below the stored hash sample's size the page's preview (stored rows) is the whole DB: same numbers."""
    spec = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode=mode, q=0.2, seed=3)
    exact = filtering.filter_report(con, spec, bins=10)
    preview = filtering.filter_report(con, spec, bins=10, max_samples=aggregates.SAMPLE_ROWS_MAX)
    scope = preview["scope"].iloc[0]
    assert (scope["n_used"], scope["n_all"], bool(scope["sampled"])) == (300, 300, False), scope.to_dict()
    for key in ("summary", "hist_v", "hist_gold_reward", "hist_gold_tokens", "composition"):
        pd.testing.assert_frame_equal(exact[key], preview[key], check_exact=False, rtol=1e-9, obj=key)


def test_filter_preview_samples_a_db_larger_than_the_stored_sample(tmp_path, monkeypatch):
    """Above it, the preview ranks finalize's uniform hash sample (cost independent of the DB size) and says so;
    the same rule on the sample drops the same share, and its dropped rows sit above its kept ones."""
    monkeypatch.setattr(aggregates, "SAMPLE_ROWS_MAX", 400)
    db = synthetic.make_synthetic_db(tmp_path / "big.duckdb", 2000, seed=4)
    c = store.connect(db, read_only=True)
    try:
        spec = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode="top", q=0.25)
        rep = filtering.filter_report(c, spec, bins=10, max_samples=400)
        scope = rep["scope"].iloc[0]
        summ = rep["summary"].set_index("group")
    finally:
        c.close()
    assert bool(scope["sampled"]) and scope["n_all"] == 2000 and 300 <= scope["n_used"] <= 500, scope.to_dict()
    assert summ.loc["all", "n"] == scope["n_used"], (summ.loc["all", "n"], scope.to_dict())
    assert summ.loc["dropped", "n"] == int(0.25 * scope["n_used"]), summ["n"].to_dict()
    assert summ.loc["dropped", "min"] >= summ.loc["kept", "max"], summ[["min", "max"]].to_dict()


def test_filter_random_is_seeded(con):
    a = filtering.filter_summary(con, filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode="random", q=0.3,
                                           seed=1))
    b = filtering.filter_summary(con, filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode="random", q=0.3,
                                           seed=2))
    assert a.loc[2, "n"] == b.loc[2, "n"] == 90 and a.loc[2, "mean"] != b.loc[2, "mean"]


def test_prompt_map_downsamples_in_sql(con):
    pts, n = prompt_map.prompt_map_points(con, variant="adv", policy="pm-sft-1k", reward="rm-10k", max_points=50)
    assert n == 300 and len(pts) == 50 and pts["seam"].notna().all()
    allp, _ = prompt_map.prompt_map_points(con, variant="adv", policy="pm-sft-1k", reward="rm-10k", max_points=1000)
    assert len(allp) == 300
    assert len(prompt_map.samples_by_ids(con, list(pts["sample_id"][:5]))) == 5
