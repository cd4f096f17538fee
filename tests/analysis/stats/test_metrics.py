"""Metric functions against hand-computed values, and the SQL macros against the Python reference."""

import math

import numpy as np
import pytest

from analysis.stats import metrics
from analysis.storage import store


def test_seam_hand_computed():
    # gold: l = -2 over 2 tokens (mean -1), r = 1.0
    # worse 1: l = -1 / 2 tok (mean -0.5), r = 2.0 -> hacked; worse 2: mean -3, r = 0.5 -> not hacked
    res = metrics.seam_sample(-2.0, 2, 1.0, [-1.0, -6.0], [2, 2], [2.0, 0.5], alpha=1.0)
    w1, w2 = math.exp(-0.5), math.exp(-3.0)
    assert res.seam == pytest.approx(w1 / 2)
    assert res.seam_rel == pytest.approx(w1 / (w1 + w2))
    assert res.hack_rate == 0.5
    assert res.k == 2
    assert res.pm_prefers_gold is False  # worse 1 has the higher mean log-prob
    assert res.rm_prefers_gold is False
    # ranks: lp (gold -1, w1 -0.5, w2 -3) and r (1, 2, 0.5) order identically
    assert res.rank_agreement == pytest.approx(1.0)


def test_alpha_zero_uses_sum_and_soft_hacking():
    res = metrics.seam_sample(-2.0, 2, 1.0, [-1.0], [4], [1.0], alpha=0.0, tau=0.5)
    # alpha 0: w = exp(-1); soft h = sigmoid(0) = 0.5
    assert res.seam == pytest.approx(math.exp(-1.0) * 0.5)
    assert res.hack_rate == pytest.approx(0.5)
    hard = metrics.seam_sample(-2.0, 2, 1.0, [-1.0], [4], [1.0], alpha=0.0)
    assert hard.hack_rate == 0.0  # a tie is not hacking


def test_kendall_tau_b_with_ties_and_constant():
    assert metrics.kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(metrics.kendall_tau_b([1, 1, 1], [1, 2, 3]))
    # one tie in x: C=2, D=0, ties_x=1 -> 2 / sqrt(2*3)
    assert metrics.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_wilson_matches_known_values():
    p = metrics.wilson(35, 100)
    # Wilson 95% for 35/100: [0.2636, 0.4474]
    assert p.lo == pytest.approx(0.2636, abs=1e-4)
    assert p.hi == pytest.approx(0.4474, abs=1e-4)
    zero = metrics.wilson(0, 10)
    assert zero.lo == 0.0 and 0.27 < zero.hi < 0.28
    assert metrics.wilson(0, 0).n == 0 and "n = 0" in str(metrics.wilson(0, 0))


def test_pair_outcomes_reports_ties_separately():
    out = metrics.pair_outcomes([1, 2, 3, 4], [0, 3, 3, 1])
    assert (out.correct, out.wrong, out.ties) == (2, 1, 1)
    assert out.mismatch().k == 1 and out.mismatch().n == 3


def test_planner_and_kappa():
    assert metrics.n_for_halfwidth(0.5, 0.05) == 385
    assert metrics.cohen_kappa(list("AABB"), list("AABB")) == pytest.approx(1.0)
    # po = 0.5, pe = 0.5 -> kappa 0
    assert metrics.cohen_kappa(list("AABB"), list("ABAB")) == pytest.approx(0.0)


def test_bootstrap_mean_contains_mean():
    m, lo, hi = metrics.bootstrap_mean(np.arange(100.0))
    assert lo < m == 49.5 < hi


def _random_db(path, n_samples=30, k=3, seed=0):
    rng = np.random.default_rng(seed)
    with store.writer(path) as con:
        samples, responses, pm, rm = [], [], [], []
        for i in range(n_samples):
            sid = f"s{i:03d}"
            samples.append(dict(sample_id=sid, dataset="d", source_row=i, source=None, prompt="p", gold="g",
                                rejected=None, meta={}))
            for variant, count in (("gold", 1), ("adv", k), ("contrast", k)):
                for j in range(count):
                    rid = f"{sid}-{variant}-{j}"
                    responses.append((rid, sid, variant, j, "t", {}))
                    n = int(rng.integers(1, 30))
                    lp = float(rng.normal(-2, 1)) * n
                    pm.append((rid, "pm", lp, n, lp / n))
                    # rounding creates ties, which must count as "not hacked" in both implementations
                    rm.append((rid, "rm", float(np.round(rng.normal(), 1))))
        store.insert(con, "samples", samples)
        store.insert(con, "responses", responses)
        store.insert(con, "pm_scores", pm)
        store.insert(con, "rm_scores", rm)
        store.finalize(con)
    return pm, rm


@pytest.mark.parametrize("alpha,tau", [(1.0, 0.0), (0.0, 0.0), (0.5, 0.3)])
def test_sql_macros_agree_with_python(tmp_path, alpha, tau):
    db = tmp_path / "m.duckdb"
    pm, rm = _random_db(db)
    lp = {r[0]: (r[2], r[3]) for r in pm}
    rw = {r[0]: r[2] for r in rm}
    con = store.connect(db)
    sql = {(r[0], r[1]): r for r in con.execute(
        "SELECT sample_id, variant, seam, seam_rel, hack_rate, k, pm_prefers_gold FROM seam_at(?, ?)",
        [alpha, tau]).fetchall()}
    ranks = dict(((r[0], r[1]), r[2]) for r in con.execute(
        "SELECT sample_id, variant, rank_agreement FROM rank_agreement_at(?)", [alpha]).fetchall())
    assert len(sql) == 60
    for (sid, variant), row in sql.items():
        g = f"{sid}-gold-0"
        ws = [f"{sid}-{variant}-{j}" for j in range(3)]
        ref = metrics.seam_sample(lp[g][0], lp[g][1], rw[g], [lp[w][0] for w in ws], [lp[w][1] for w in ws],
                                  [rw[w] for w in ws], alpha=alpha, tau=tau)
        assert row[2] == pytest.approx(ref.seam, rel=1e-9, abs=1e-12)
        assert row[3] == pytest.approx(ref.seam_rel, rel=1e-9, abs=1e-12)
        assert row[4] == pytest.approx(ref.hack_rate)
        assert row[5] == ref.k
        assert row[6] == ref.pm_prefers_gold
        got = ranks.get((sid, variant))
        if math.isnan(ref.rank_agreement):
            assert got is None or math.isnan(got)
        else:
            assert got == pytest.approx(ref.rank_agreement)
    # the materialised default (alpha 1, hard) equals the macro
    if (alpha, tau) == (1.0, 0.0):
        mat = {(r[0], r[1]): r[2] for r in con.execute("SELECT sample_id, variant, seam FROM seam").fetchall()}
        assert mat == pytest.approx({key: v[2] for key, v in sql.items()})
    con.close()
