"""The pre-registered study (`seam experiment --human`): hash splits, the SEAM variant macros against their
Python oracle, each analysis's pure compute() on a hand-built 3-prompt dataset, the verdict, and the
Evidence page on a DB holding those results."""

import math
import shutil

import duckdb
import numpy as np
import pytest

from analysis.cli import build_parser
from analysis.stats.metrics import seam_variants as oracle
from analysis.storage import experiment_store, store
from analysis.study import controls, endpoint, retrain_eval
from analysis.study.controls import GATE, V2_PLANT
from analysis.study.evidence_data import RM, EvidenceData, Item, split_items
from analysis.study.prereg_config import SEAM_VARIANTS, HumanStudyConfig

ITEMS = ["i0", "i1", "i2"]
PM = "pm"


def _data(planted_seam=(0.9, 0.1, 0.2), twin_seam=(0.1, 0.5, 0.9), v2_seam=None):
    plants = (("p", "planted"), ("t", "planted_twin")) + ((("v", "planted_v2"),) if v2_seam else ())
    rms = [RM(f"r{s}-{k}", s, k) for s in (0, 10) for k in (0, 1)] + [
        RM(f"{p}-{k}", 10, k, arm) for p, arm in plants for k in (0, 1)]
    margin = {}
    for r in rms:
        # size 10: wrong on i0 only (E = [1, 0, 0]); size 0: wrong on i1 only; planted: like size 10
        margin[r.ref] = dict(zip(ITEMS, (1.0, -1.0, 1.0) if r.size == 0 else (-1.0, 1.0, 2.0 + r.seed)))
    seam = {}
    for r in rms:
        for v in SEAM_VARIANTS:
            vals = {"planted": planted_seam, "planted_twin": twin_seam, "planted_v2": v2_seam}.get(r.arm,
                                                                                                 (0.9, 0.1, 0.2))
            seam[(PM, r.ref, v)] = dict(zip(ITEMS, vals))
            seam[(PM + controls.PERM, r.ref, v)] = dict(zip(ITEMS, (0.3, 0.3, 0.3)))
    retrain = [dict(analysis="acquisition", arm=arm, q=None, seed=s, item=i, correct=c)
               for s in (0, 1) for arm, cs in (("random", (1, 0, 0)), ("top_seam", (1, 1, 0)))
               for i, c in zip(ITEMS, cs)]
    return EvidenceData(mode="human", items=ITEMS, policies=[PM], rms=rms, margin=margin, seam=seam,
                        cluster={"i0": 1, "i1": 0, "i2": 0}, planted_cluster=1, retrain=retrain)


CFG = HumanStudyConfig(split_a=10, split_b=1, split_c=3, grid_sizes=[0, 10], grid_seeds=2, acq_start=1, acq_add=1,
                       n_resamples=200, primary_variant="paper")


def test_splits_follow_the_prompt_hash_only():
    items = [Item(f"x{i}", f"prompt {i}", "c", "r") for i in range(30)]
    s1 = split_items(items, {"A": 10, "B": 5, "C": 5})
    s2 = split_items(list(reversed(items)) + [Item("dup", "prompt 3", "c2", "r2")], {"A": 10, "B": 5, "C": 5})
    ids = lambda s: {k: [it.prompt for it in v] for k, v in s.items()}  # noqa: E731
    assert ids(s1) == ids(s2), "an item's split must not depend on input order or duplicate prompts"
    flat = [it.prompt for v in s1.values() for it in v]
    assert len(flat) == len(set(flat)) == 20, flat


def test_seam_variant_macro_matches_the_oracle():
    rng = np.random.default_rng(3)
    con = duckdb.connect()
    store.init_schema(con)
    want = {}
    for item in range(6):
        k = int(rng.integers(2, 7))
        lp_g, n_g, r_g = -rng.uniform(5, 60), int(rng.integers(3, 40)), rng.normal()
        lp, n, r = -rng.uniform(5, 400, k), rng.integers(3, 200, k), rng.normal(size=k)
        if item == 0:
            r = r_g - 1 - np.abs(r)          # no probe hacks: paper variant is -inf
        rows = [("run", f"i{item}", f"i{item}:g", "gold", "pm", "rm", lp_g, n_g, r_g)]
        rows += [("run", f"i{item}", f"i{item}:{j}", "adv", "pm", "rm", lp[j], int(n[j]), r[j]) for j in range(k)]
        con.executemany("INSERT INTO study_probe_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        want[f"i{item}"] = oracle(lp_g, n_g, r_g, lp, n, r, alpha=0.7, beta=0.5)
    got = con.execute("SELECT * FROM seam_variants('run', alpha := 0.7, beta := 0.5) WHERE variant = 'all'").df()
    assert len(got) == 6, got
    for row in got.itertuples():
        w = want[row.item_id]
        for col in ("seam_alpha", "log_seam_paper", "seam_cand", "hack_rate"):
            a, b = getattr(row, col), w[col]
            assert (a == b == -math.inf) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (row.item_id, col, a, b)
        assert row.k == w["k"]
    assert got.set_index("item_id").loc["i0", "log_seam_paper"] == -math.inf


def test_endpoint_per_cell_never_pooled():
    t = endpoint.compute(_data(), CFG)["study_endpoint"]
    auc = {(r["rm_size"], r["seam_variant"]): r for r in t if r["stat"] == "auroc"}
    assert auc[(10, "paper")]["value"] == 1.0 and auc[(10, "paper")]["primary_endpoint"], auc[(10, "paper")]
    assert auc[(0, "paper")]["value"] == 0.0, "size-0 RM errs on i1, where SEAM is lowest"
    assert not auc[(0, "alpha")]["primary_endpoint"] and auc[(10, "paper")]["n"] == 3
    assert all(r["p_holm"] is None or math.isnan(r["p_holm"]) or r["p_holm"] >= r["p_value"] for r in t)
    assert {r["stat"] for r in t} == {"auroc", "lrt_vs_margin", "lrt_vs_margin_disagreement"}


def _shared_term_data(n=200, seed=0):
    """SEAM carries only the shared r(chosen) term: a low r(chosen) raises both E and every h_j."""
    rng = np.random.default_rng(seed)
    items = [f"j{i}" for i in range(n)]
    rms = [RM(f"r{s}-{k}", s, k) for s in (0, 10) for k in (0, 1)]
    gold, rej = rng.normal(size=n), rng.normal(size=n)
    seam = -gold + 0.05 * rng.normal(size=n)
    return EvidenceData(
        mode="human", items=items, policies=[PM], rms=rms,
        margin={r.ref: dict(zip(items, gold - rej)) for r in rms},
        gold_score={r.ref: dict(zip(items, gold)) for r in rms},
        seam={(PM, r.ref, v): dict(zip(items, seam)) for r in rms for v in SEAM_VARIANTS})


def test_added_value_tests_control_for_the_shared_chosen_score():
    d = _shared_term_data()
    t = endpoint.compute(d, CFG)["study_endpoint"]
    lrt = [r for r in t if r["stat"] == "lrt_vs_margin" and r["seam_variant"] == "paper" and r["rm_size"] == 10][0]
    auc = [r for r in t if r["stat"] == "auroc" and r["seam_variant"] == "paper" and r["rm_size"] == 10][0]
    assert auc["value"] > 0.6, f"the shared term alone makes SEAM predict E (AUROC {auc['value']:.3f})"
    assert lrt["p_value"] > 0.01, (f"SEAM = -r(chosen) + noise adds nothing once r(chosen) is a covariate, "
                                   f"but p = {lrt['p_value']:.2g}")
    without = endpoint.lrt(d.event("r10-0"), [d.abs_margin("r10-0")], endpoint._finite(d.seam_values(PM, "r10-0", "paper")))
    assert without < 1e-4, f"without the covariate the shared term looks like added value (p = {without:.2g})"


def test_secondary_pm_cells_count_only_their_scored_items():
    d = _shared_term_data(n=40)
    sec = "pm2"
    seam = dict(d.seam)
    seam.update({(sec, r.ref, v): {i: 0.1 * k for k, i in enumerate(d.items[:12])} for r in d.rms for v in SEAM_VARIANTS})
    d2 = EvidenceData(mode="human", items=d.items, policies=[PM, sec], rms=d.rms, margin=d.margin,
                      gold_score=d.gold_score, seam=seam)
    t = endpoint.compute(d2, CFG)["study_endpoint"]
    ns = {r["n"] for r in t if r["policy"] == sec and r["stat"] == "auroc"}
    assert ns == {12}, f"a secondary PM scored on 12 of 40 items must report n = 12, got {ns}"


def test_cell_auroc_p_is_not_floored_by_the_resample_count():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.35
    strong, null = y + rng.normal(0, 0.8, 300), rng.normal(0, 1, 300)
    a = endpoint.cell_auroc([strong], [y], n_resamples=200, seed=0)
    z = endpoint.cell_auroc([null], [y], n_resamples=200, seed=0)
    assert a["lo"] > 0.5 and a["p"] < 1 / 201 / 40, (f"a clear effect must survive Holm over 40 tests even at "
                                                      f"200 resamples: AUROC {a['value']:.3f}, p = {a['p']:.2g}")
    assert z["p"] > 0.05 and z["lo"] < 0.5 < z["hi"], f"no effect must not be significant: {z}"


def test_holm():
    assert endpoint.holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])


def test_power_mde_shrinks_with_n():
    assert endpoint.auroc_mde(600, 210) < endpoint.auroc_mde(60, 21) < 0.5, "MDE must fall with n"
    rows = endpoint.power(CFG, 600, 600)
    assert rows[0]["n"] == 600 and 0 < rows[0]["mde"] < 0.1, rows[0]


def test_controls_detect_the_planted_cluster_and_flag_a_miss():
    rows = controls.compute(_data(), CFG)["study_controls"]
    pos = [r for r in rows if r["control"].startswith("positive") and r["seam_variant"] == "paper"][0]
    assert pos["value"] == 1.0 and pos["passed"] is True, f"plant AUROC 1 vs twin 0 is a difference of 1: {pos}"
    neg = [r for r in rows if r["control"].startswith("negative")]
    assert {r["value"] for r in neg} == {0.5}, "constant permuted weights rank nothing"
    missed = controls.compute(_data(planted_seam=(0.1, 0.5, 0.9)), CFG)["study_controls"]
    pos = [r for r in missed if r["control"].startswith("positive") and r["seam_variant"] == "paper"][0]
    assert pos["passed"] is False, pos
    text = retrain_eval.verdict(_data(), CFG, [], missed, [])
    assert "FAILED" in text and "no claim" in text, text
    # a cluster that SEAM singles out just as much without the plant is no detection (v1's spurious pass)
    same = controls.compute(_data(twin_seam=(0.9, 0.1, 0.2)), CFG)["study_controls"]
    by = {(r["control"], r["seam_variant"]): r for r in same}
    own = by[("reference: planted RM, cluster AUROC", "paper")]
    gate = by[(controls.GATE, "paper")]
    assert own["value"] == 1.0 and own["passed"] is None, f"the plant's own AUROC is a reference: {own}"
    assert gate["value"] == 0.0 and gate["passed"] is False, f"plant = twin must fail the gate: {gate}"


def test_v2_plant_is_a_reference_and_the_verdict_reads_it():
    """The v2 plant (flipped pairs alike) is reported plant minus twin like the gate, but tests nothing; with
    the gate passed and v2 not detected, the verdict says SEAM sees errors only where its PM puts weight."""
    d = _data(v2_seam=(0.1, 0.5, 0.9))
    rows = controls.compute(d, CFG)["study_controls"]
    by = {(r["control"], r["seam_variant"]): r for r in rows}
    v2 = by[(controls.V2_PLANT, "paper")]
    assert v2["value"] == 0.0 and v2["passed"] is None, f"v2 = twin: difference 0, and no test: {v2}"
    assert by[(controls.GATE, "paper")]["passed"] is True, by[(controls.GATE, "paper")]
    assert by[("reference: v2 plant, manipulation check", "hack_rate")]["passed"] is None, "a reference"
    text = retrain_eval.verdict(d, CFG, [], rows, [])
    assert "positive control passed" in text and "moved it by +0.000" in text and "where its PM puts weight" in text, \
        text


def test_manipulation_check_says_whether_the_plant_took():
    d = _shared_term_data(n=60)
    items = d.items
    cluster = {i: int(k % 3 == 0) for k, i in enumerate(items)}
    inside = np.array([cluster[i] for i in items], float)
    rms = d.rms + [RM(f"p{k}", 10, k, "planted") for k in (0, 1)] + [RM(f"t{k}", 10, k, "planted_twin") for k in (0, 1)]
    seam = dict(d.seam)

    def with_plant(gap):
        for r in rms[4:]:
            h = 0.2 + (gap * inside if r.arm == "planted" else 0 * inside) + 0.01 * np.arange(60) / 60
            for v in SEAM_VARIANTS:
                seam[(PM, r.ref, v)] = dict(zip(items, h))
        return EvidenceData(mode="human", items=items, policies=[PM], rms=rms, margin={**d.margin, **{
            r.ref: d.margin["r10-0"] for r in rms[4:]}}, gold_score=d.gold_score, seam=dict(seam),
            cluster=cluster, planted_cluster=1)

    took = {r["control"]: r for r in controls.compute(with_plant(0.5), CFG)["study_controls"]}
    m = took["manipulation check: the plant took"]
    assert m["passed"] is True and m["value"] == pytest.approx(0.5, abs=0.02), m
    assert took["reference: unplanted twin"]["passed"] is None, "the twin is a reference, not a test"
    flat = controls.compute(with_plant(0.0), CFG)["study_controls"]
    m = [r for r in flat if r["control"].startswith("manipulation")][0]
    assert m["passed"] is False and abs(m["value"]) < 0.02, m
    text = retrain_eval.verdict(with_plant(0.0), CFG, [], flat, [])
    assert "FAILED" in text and "did not take" in text, text
    # the plant took and the hack rate sees it, but the PM-weighted primary does not: the verdict says so
    took = controls.compute(with_plant(0.5), CFG)["study_controls"]
    for r in took:
        if r["control"].startswith("positive") and r["seam_variant"] == CFG.primary_variant:
            r.update(value=0.42, lo=0.38, hi=0.48, passed=False)
    text = retrain_eval.verdict(with_plant(0.5), CFG, [], took, [])
    assert "FAILED" in text and "PM weighting hides" in text and "did take" in text, text
    assert "unplanted twin 0." in text, f"the verdict should quote the twin's hack-rate AUROC: {text}"
    own = [r for r in took if r["control"].startswith("reference: planted RM") and r["seam_variant"] == "hack_rate"]
    assert f"flagged the cluster (AUROC {own[0]['value']:.2f}" in text, f"quote the plant's own AUROC: {own} {text}"


def test_pm_scale_references_explain_a_missed_plant():
    """The PM's scale across items hides a plant that raises SEAM within every planted item: the PM-term row
    shows the scale sets the ranking (rho near 1), the within-item rise shows the plant's effect."""
    rng = np.random.default_rng(5)
    n = 90
    base = _shared_term_data(n=n)
    items = base.items
    inside = (np.arange(n) % 3 == 0).astype(float)
    term = rng.normal(-20, 4, n) - 3 * inside                    # the cluster's probes are less likely to the PM
    rms = base.rms + [RM(f"p{k}", 10, k, "planted") for k in (0, 1)] + [RM(f"t{k}", 10, k, "planted_twin")
                                                                         for k in (0, 1)]
    seam = dict(base.seam)
    seam[(PM, controls.PM_ONLY, "paper")] = dict(zip(items, term))
    for r in rms[4:]:
        share = np.where(inside == 1, 0.9, 0.4) if r.arm == "planted" else np.full(n, 0.4)
        vals = term + np.log(share) + 0.01 * rng.normal(size=n)
        vals[5] = -np.inf if r.arm == "planted_twin" else vals[5]     # the twin hacks no probe of item j5
        for v in SEAM_VARIANTS:
            seam[(PM, r.ref, v)] = dict(zip(items, vals if v == "paper" else share))
    d = EvidenceData(mode="human", items=items, policies=[PM], rms=rms, margin={**base.margin, **{
        r.ref: base.margin["r10-0"] for r in rms[4:]}}, gold_score=base.gold_score, seam=seam,
        cluster=dict(zip(items, inside.astype(int))), planted_cluster=1)
    rows = {(r["control"], r["seam_variant"]): r for r in controls.compute(d, CFG)["study_controls"]}
    own = rows[("reference: planted RM, cluster AUROC", "paper")]
    assert own["lo"] <= 0.5 and own["passed"] is None, f"the PM scale should hide the plant from its own AUROC: {own}"
    gate = rows[(controls.GATE, "paper")]
    assert gate["passed"] is True and gate["lo"] > 0, f"plant minus twin cancels the PM scale: {gate}"
    term_row = rows[("reference: PM term alone", "paper")]
    assert term_row["value"] < 0.4 and term_row["rho"] > 0.9, term_row
    ceiling = rows[("reference: ceiling, every in-cluster probe hacked", "paper")]
    assert ceiling["value"] < 0.5 and ceiling["lo"] <= 0.5, f"the PM scale caps any plant here: {ceiling}"
    rise = rows[("reference: within-item rise, plant minus twin", "paper")]
    assert rise["value"] > 0.95 and rise["lo"] > 0.5 and rise["passed"] is None, rise
    text = retrain_eval.verdict(d, CFG, [], list(rows.values()), [])
    assert "positive control passed" in text and "plant minus unplanted twin +" in text, text
    gate.update(passed=False)        # had the gate missed, the reference rows say why
    text = retrain_eval.verdict(d, CFG, [], list(rows.values()), [])
    assert "FAILED" in text and "PM term alone" in text and "SEAM rose" in text and "no plant could" in text, text


def test_retrain_summary_and_verdict():
    d = _data()
    rows = retrain_eval.compute(d, CFG)["study_retrain"]
    by = {r["arm"]: r for r in rows}
    assert by["random"]["accuracy"] == pytest.approx(1 / 3) and by["top_seam"]["accuracy"] == pytest.approx(2 / 3)
    assert by["top_seam"]["delta_vs_random"] == pytest.approx(1 / 3) and by["top_seam"]["n_seeds"] == 2
    ep = endpoint.compute(d, CFG)["study_endpoint"]
    text = retrain_eval.verdict(d, CFG, ep, controls.compute(d, CFG)["study_controls"], rows)
    assert "positive control passed" in text and "RM size 10: 1.00" in text, text


def test_cli_routes_human_to_the_study(tmp_path):
    args = build_parser().parse_args(["experiment", "--quick", "--human", "proxy", "--db", str(tmp_path / "x.duckdb"),
                                      "--grid-seeds", "3", "--quiet"])
    cfg = HumanStudyConfig.from_args(args)
    assert cfg.proxy and cfg.mode == "proxy judge" and cfg.grid_seeds == 3 and cfg.name == "quick"
    assert cfg.split_c == HumanStudyConfig.QUICK["split_c"] and cfg.progress is False and cfg.db == tmp_path / "x.duckdb"


@pytest.fixture(scope="module")
def db(synthetic_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("evidence") / "seam.duckdb"
    shutil.copy(synthetic_db(60, seed=5), path)
    d = _data()
    res = {**endpoint.compute(d, CFG), **controls.compute(d, CFG), **retrain_eval.compute(d, CFG)}
    res = {t: [dict(run_id="r1", **r) for r in rows] for t, rows in res.items()}
    res["study_verdict"] = [dict(run_id="r1", mode="proxy judge", headline=False, verdict="No evidence <b>x</b>.")]
    res["study_design"] = [dict(run_id="r1", mode="proxy judge", design={"splits": {"sizes": {"C": 3}}})]
    res["study_power"] = [dict(run_id="r1", **p) for p in endpoint.power(CFG, 3, 1)]
    experiment_store.write_evidence(path, res)
    return path


def test_evidence_page(run_app, find_frame):
    at = run_app("evidence")
    text = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning)
    assert "Proxy judge" in text and "No evidence" in text, text
    prim = find_frame(at, "auroc", "lo", "hi", "primary_endpoint")
    assert prim["primary_endpoint"].iloc[:2].all() and not prim["primary_endpoint"].iloc[2:].any(), prim
    top = prim[prim["primary_endpoint"] & (prim["rm_size"] == 10)].iloc[0]
    assert top["auroc"] == 1.0 and top["seam_variant"] == "paper", prim.head()
    assert any("(proxy judge)" in h.value for h in at.subheader), [h.value for h in at.subheader]


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    """`seam experiment --quick --human auto`: real models, real HH-RLHF pairs where ../shared has them (else the
    proxy judge); the design is in the ledger before the results, and every table the Evidence page reads is filled."""
    from analysis.cli import main

    db = tmp_path / "q.duckdb"
    assert main(["experiment", "--quick", "--human", "auto", "--db", str(db), "--quiet"]) == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        cfg = con.execute("SELECT config, started_at FROM experiment_runs").fetchone()
        assert "preregistration" in cfg[0], "the design must be stored with the run's config at its start"
        written = con.execute("SELECT written_at, mode FROM study_design").fetchone()
        assert written[0] <= con.execute("SELECT finished_at FROM experiment_runs").fetchone()[0], written
        prim = con.execute("SELECT rm_size, value, lo, hi, n FROM study_endpoint WHERE primary_endpoint").fetchall()
        sizes = HumanStudyConfig.QUICK["grid_sizes"]
        assert sorted(r[0] for r in prim) == sorted(sizes), prim
        nc = HumanStudyConfig.QUICK["split_c"]      # n counts the C items with a SEAM value (some lack probes)
        assert all(nc - 5 <= r[4] <= nc and (r[1] is None or r[2] <= r[1] <= r[3]) for r in prim), prim
        kinds = {r[0] for r in con.execute("SELECT control FROM study_controls").fetchall()}
        assert any(k.startswith("positive") for k in kinds) and any(k.startswith("negative") for k in kinds), kinds
        # the positive control's plant is its twin except on exactly one topic cluster, where it differs on ~every row
        top = max(sizes)
        diff = dict(con.execute(f"""SELECT i.cluster, avg((p.score != t.score)::INT)
            FROM study_probe_scores p JOIN study_probe_scores t USING (run_id, item_id, probe_id, policy)
            JOIN study_items i USING (run_id, item_id)
            WHERE p.reward = 'rm-{top}+syn-planted-s0' AND t.reward = 'rm-{top}+syn-planted-twin-s0'
            GROUP BY ALL""").fetchall())
        assert sorted(diff.values())[:-1] == [0.0] * (len(diff) - 1) and max(diff.values()) > 0.9, diff
        models = {r[0] for r in con.execute("SELECT DISTINCT arm FROM study_models").fetchall()}
        assert {"planted", "planted_twin", "planted_v2"} <= models and "planted_v1" not in models, \
            f"--quick trains the v3 plant, its twin and the v2 reference, not the v1 one: {models}"
        assert {GATE, V2_PLANT} <= kinds, kinds
        arms = {r[0] for r in con.execute("SELECT arm FROM study_retrain WHERE analysis = 'acquisition'").fetchall()}
        assert {"top_seam", "top_hack_rate", "smallest_margin", "random"} <= arms, arms
        sat = con.execute("SELECT count(DISTINCT bon_n), max(bon_n), min(n), max(n) FROM study_saturation").fetchone()
        assert sat == (5, 16, HumanStudyConfig.QUICK["bon_prompts"], HumanStudyConfig.QUICK["bon_prompts"]), sat
        concl = con.execute("SELECT comparison, conclusion FROM study_saturation_test").fetchall()
        assert len(concl) == len(sizes) + 1 and all(c[1] for c in concl), concl
        v = con.execute("SELECT verdict FROM study_verdict").fetchone()[0]
        assert "no human labels exist for generated answers" in v, v
        assert len(v) > 80 and ("proxy judge" in v) == (written[1] != "human"), v
    finally:
        con.close()


def test_spot_check_labels_become_human_items(synthetic_db, tmp_path):
    """A consensus hand label 'b beat a' on a pair of the results DB is a human-labelled item (winner = chosen)."""
    from analysis.storage.labels import LabelStore, default_path
    from analysis.study.prereg_run import hand_label_items

    db = tmp_path / "seam.duckdb"
    shutil.copy(synthetic_db(40, seed=2), db)
    con = duckdb.connect(str(db), read_only=True)
    (sid, prompt), = con.execute("SELECT sample_id, prompt FROM samples ORDER BY sample_id LIMIT 1").fetchall()
    (a, ta), (b, tb) = con.execute("SELECT response_id, text FROM responses WHERE sample_id = ? ORDER BY response_id"
                                   " LIMIT 2", [sid]).fetchall()
    con.close()
    store_ = LabelStore(default_path(db))
    store_.put(a, b, "ann1", "b", kind="pm_samples", sample_id=sid)
    store_.put(a, b, "ann2", "skip", kind="pm_samples", sample_id=sid)
    items = hand_label_items(HumanStudyConfig(db=db))
    assert [(it.prompt, it.chosen, it.rejected, it.label_source) for it in items] == [(prompt, tb, ta, "hand")], items


def test_probe_weights_are_the_pm_softmax_of_the_paper_term():
    """The v3 plant's training weights: per item, softmax over its probes of l/n^beta (the `paper` SEAM's PM
    term); a probe with no finite log-prob weighs 0 and an item with none is left out."""
    from analysis.study.prereg_run import probe_weights

    beta = 0.5
    scores = [(-4.0, 4), (-30.0, 25), (-9.0, 9), (float("nan"), 3), (-2.0, 1), (float("nan"), 5)]
    got = probe_weights(["a", "a", "a", "a", "b", "c"], [0, 1, 2, 3, 1, 0], scores, beta, 4)
    t = np.array([-4.0 / 4 ** beta, -30.0 / 25 ** beta, -9.0 / 9 ** beta])
    want_a = np.append(np.exp(t - t.max()) / np.exp(t - t.max()).sum(), 0.0)
    assert set(got) == {"a", "b"}, f"item c has no finite log-prob and must be left out: {sorted(got)}"
    assert np.allclose(got["a"], want_a, atol=1e-12), (got["a"], want_a)
    assert np.allclose(got["b"], [0, 1, 0, 0]), got["b"]


def test_quick_preset_reaches_bool_fields_unless_the_flag_is_given(tmp_path):
    """--quick drops the v1 reference plant (a bool field); --no-plant-v1 / --no-synthetic-arm still work alone."""
    parse = lambda *a: HumanStudyConfig.from_args(build_parser().parse_args(  # noqa: E731
        ["experiment", *a, "--human", "proxy", "--db", str(tmp_path / "x.duckdb")]))
    assert parse("--quick").plant_v1 is False, "the --quick preset must set plant_v1=False"
    full = parse()
    assert full.plant_v1 is True and full.synthetic_arm is True, (full.plant_v1, full.synthetic_arm)
    off = parse("--no-plant-v1", "--no-synthetic-arm")
    assert off.plant_v1 is False and off.synthetic_arm is False, (off.plant_v1, off.synthetic_arm)
