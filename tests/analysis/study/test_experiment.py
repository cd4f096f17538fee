"""`seam experiment` (analysis/study/): config, CLI, store, and a tiny real end-to-end run (slow)."""

import json
import math
import os
from pathlib import Path

import duckdb
import pytest

from analysis.storage import experiment_store, ledger
from analysis.study.config import SFT, SMOLLM, ExperimentConfig
from analysis.cli import build_parser
from analysis.study.run import _Setup, make_splits


def _parse(argv):
    return build_parser().parse_args(argv)


def test_config_defaults_and_quick():
    full = ExperimentConfig()
    assert len(full.policies) >= 3 and len(full.rm_sizes) >= 4 and full.rm_sizes[-1] is None
    q = ExperimentConfig.quick(db=Path("/tmp/x.duckdb"))
    assert q.name == "quick" and q.bon_prompts < full.bon_prompts and q.seeds >= 2
    assert q.dataset("bon") == "exp-quick:bon" and q.models_path == Path("/tmp/models")
    json.dumps(q.to_dict())  # the config is stored as JSON in experiment_runs


@pytest.mark.parametrize("bad", [dict(policy_samples=1), dict(selection_q=[1.5]), dict(seeds=0),
                                 dict(variants=["generated"]), dict(policies=[]), dict(rm_sizes=[0])])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ExperimentConfig(**bad)


def test_cli_flags_map_to_config(tmp_path):
    args = _parse(["experiment", "--quick", "--db", str(tmp_path / "x.duckdb"), "--rm-sizes", "0,8,all",
                   "--policy", SMOLLM, "--policy", SFT, "--samples", "3", "--selection-q", "0.2,0.4",
                   "--human-pairs", "none", "--seeds", "4", "--quiet"])
    cfg = ExperimentConfig.from_args(args)
    assert cfg.name == "quick" and cfg.rm_sizes == [0, 8, None] and cfg.policies == [SMOLLM, SFT]
    assert cfg.policy_samples == 3 and cfg.selection_q == [0.2, 0.4] and cfg.human_pairs is None
    assert cfg.seeds == 4 and cfg.progress is False and cfg.db == tmp_path / "x.duckdb"
    full = ExperimentConfig.from_args(_parse(["experiment", "--db", str(tmp_path / "y.duckdb")]))
    assert full.name == "full" and full.human_pairs == "auto"


def test_store_roundtrip(tmp_path):
    db = tmp_path / "e.duckdb"
    ledger.start_run(db, "r1", "experiment", {"name": "t", "a": 1}, {"python": "3"})
    counts = experiment_store.write_results(db, {
        "saturation_grid": [dict(run_id="r1", policy="p", reward="r", metric="bon_gold", quality=0.5,
                                 quality_lo=0.4, quality_hi=float("nan"), n=3, bon_n=4)],
        "mismatch_rates": [dict(run_id="r1", policy="p", reward="r", pair_kind="pm_samples", reference="judge",
                                k=3, n=10, rate=0.3, lo=0.1, hi=0.6, ties=0)],
    })
    assert counts["saturation_grid"] == 1 and counts["selection_results"] == 0
    ledger.finish_run(db, "r1", "done", {"x": 2})
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT policy, reward, quality, quality_lo, quality_hi, n, metric FROM saturation_grid").fetchone()
        assert row == ("p", "r", 0.5, 0.4, None, 3, "bon_gold")   # NaN is stored as NULL
        assert con.execute("SELECT name, status, json_extract(summary, '$.x') FROM experiment_runs").fetchone() == (
            "t", "done", "2")
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert set(experiment_store.RESULT_TABLES) <= tables
    finally:
        con.close()
    # a second run replaces the results, keeps the history
    ledger.start_run(db, "r2", "experiment", {}, {})
    experiment_store.write_results(db, {})
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM saturation_grid").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM experiment_runs").fetchone()[0] == 2
    finally:
        con.close()
    with pytest.raises(ValueError):
        experiment_store.write_results(db, {"saturation_grid": [dict(nope=1)]})


def test_splits_deterministic_and_disjoint(tmp_path):
    cfg = ExperimentConfig.quick(db=tmp_path / "s.duckdb", human_pairs=None)
    a, b = _Setup(), _Setup()
    make_splits(cfg, a, lambda m: None), make_splits(cfg, b, lambda m: None)
    ids = {k: [s.sample_id for s in v] for k, v in a.splits.items()}
    assert ids == {k: [s.sample_id for s in v] for k, v in b.splits.items()}
    assert len(ids["bon"]) == cfg.bon_prompts and len(ids["pool"]) == cfg.pool_prompts
    prompts = {k: {" ".join(s.prompt.split()).casefold() for s in v} for k, v in a.splits.items()}
    names = list(prompts)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not prompts[x] & prompts[y], f"prompt shared by splits {x} and {y}"
    assert (cfg.work_dir / "bon.jsonl").read_text().count("\n") == cfg.bon_prompts


# ------------------------------------------------------------------ end to end (real weights)

@pytest.mark.slow
def test_experiment_end_to_end_tiny(tmp_path, monkeypatch):
    from analysis.study.run import run_experiment

    models = Path(os.environ.get("SEAM_TEST_MODELS", tmp_path / "models"))
    db = tmp_path / "exp.duckdb"
    cfg = ExperimentConfig.quick(
        db=db, name="t", models_dir=models, sft_steps=2, sft_batch_size=2, sft_lr=1e-3, rm_sizes=[0, 24], bon_prompts=4, pool_prompts=12,
        eval_prompts=12, human_pairs_limit=8, policy_samples=2, gen_max_new_tokens=8, k=1, selection_q=[0.5],
        seeds=1, aug_base_pairs=16, aug_pairs=8, n_resamples=100, progress=False)
    summary = run_experiment(cfg, log=lambda m: None)
    assert summary["table_rows"]["saturation_grid"] == 2 * 2, summary
    con = duckdb.connect(str(db), read_only=True)
    try:
        def one(sql):
            return con.execute(sql).fetchone()

        # saturation grid: every PM x RM cell, sane values, the columns the dashboard reads
        grid = con.execute("SELECT policy_label, reward_label, quality_lo, quality, quality_hi, win_rate, n, bon_n"
                           " FROM saturation_grid ORDER BY ALL").fetchall()
        assert len(grid) == 4, f"saturation_grid has {len(grid)} rows, expected 2 PMs x 2 RMs: {grid}"
        for pm, rm, lo, q, hi, win, n, bon_n in grid:
            cell = f"cell {pm} x {rm} (notes: {summary['notes']})"
            assert n == 4, f"{cell}: n = {n} prompts, expected all 4 bon prompts"
            assert bon_n == 2, f"{cell}: bon_n = {bon_n}, expected 2 samples per prompt"
            assert None not in (lo, q, hi) and lo <= q <= hi, f"{cell}: quality {q} outside its interval [{lo}, {hi}]"
            assert win is not None and 0 <= win <= 1, f"{cell}: win rate {win} not in [0, 1]"
        assert one("SELECT count(*) FROM saturation_grid WHERE quality > oracle_quality + 1e-9")[0] == 0
        assert one("SELECT count(DISTINCT axis) FROM saturation_summary")[0] == 2
        assert one("SELECT count(*) FROM saturation_curve")[0] == 4 * 2
        # axis quality: RM accuracy on held-out pairs (chatterbot; HH when the shared file exists), PM quality
        accs = con.execute("SELECT model, metric, value, n FROM model_quality WHERE metric LIKE 'acc:%'").fetchall()
        assert accs and all(0 <= v <= 1 and n > 0 for _, _, v, n in accs)
        assert {"judge_mean", "judge_win_vs_gold"} <= {r[0] for r in con.execute(
            "SELECT metric FROM model_quality WHERE role = 'policy'").fetchall()}
        # mismatch on PM samples (one pair per prompt with N = 2) and on dataset pairs
        mm = con.execute("SELECT k, n, rate, lo, hi, ties FROM mismatch_rates WHERE pair_kind = 'pm_samples'").fetchall()
        assert len(mm) == 4
        for k, n_, rate, lo, hi, ties in mm:
            assert n_ + ties <= 4 and (n_ == 0 or (0 <= lo <= rate <= hi <= 1 and math.isclose(rate, k / n_)))
        assert one("SELECT count(*) FROM mismatch_rates WHERE pair_kind LIKE 'dataset:%'")[0] >= 3
        # SEAM validation: SEAM predictors and the three baselines, AUROC in [0, 1] where defined
        preds = {r[0] for r in con.execute("SELECT DISTINCT predictor FROM seam_validation").fetchall()}
        assert {"seam:contrast", "seam:adv", "baseline:length", "baseline:rm_margin", "baseline:pm_logprob"} <= preds
        assert one("SELECT count(*) FROM seam_validation WHERE stat = 'auroc' AND (value < 0 OR value > 1)")[0] == 0
        # selection and augmentation: all conditions, deltas against the reference condition
        conds = {r[0] for r in con.execute("SELECT DISTINCT condition FROM selection_results").fetchall()}
        assert conds == {"none", "drop_top", "drop_bottom", "drop_random"}
        assert one("SELECT count(*) FROM selection_results WHERE condition <> 'none' AND delta IS NULL"
                   " AND metric LIKE 'acc:%'")[0] == 0
        aug = {r[0] for r in con.execute("SELECT DISTINCT condition FROM augmentation_results").fetchall()}
        assert aug == {"base", "seam", "random"}
        assert one("SELECT count(*) FROM augmentation_results WHERE condition = 'seam' AND seed IS NULL"
                   " AND metric = 'seam_heldout' AND vs_random IS NOT NULL")[0] == 1
        # the standard tables hold the experiment's responses and scores; the config is recorded
        assert one("SELECT count(*) FROM responses r JOIN samples s USING (sample_id)"
                   " WHERE s.dataset = 'exp-t:bon' AND r.variant = 'policy'")[0] >= 4 * 2 * 2 - 2
        status, config = one("SELECT status, config FROM experiment_runs")
        assert status == "done" and json.loads(config)["policy_samples"] == 2
        assert one("SELECT count(*) FROM experiment_models WHERE role = 'judge'")[0] == 1
    finally:
        con.close()

    # the worked notebook runs top to bottom on this DB (plain SQL, read-only)
    import nbformat
    from nbclient import NotebookClient

    nb_path = Path(__file__).resolve().parents[3] / "notebooks" / "paper_miniature.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    monkeypatch.setenv("SEAM_DB", str(db))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "Saturation:" in text and "Mismatch on PM-sample pairs" in text


def test_splits_skip_samples_owned_by_other_datasets(tmp_path):
    """A DB that already holds some chatterbot samples (e.g. from `seam demo`) keeps them; the experiment
    picks other prompts instead of silently losing them to the sample_id key."""
    from analysis.storage import store

    cfg = ExperimentConfig.quick(db=tmp_path / "s.duckdb", human_pairs=None)
    first = _Setup()
    make_splits(cfg, first, lambda m: None)
    taken = first.splits["bon"][0]
    with store.writer(cfg.db) as con:
        store.insert(con, "samples", [dict(sample_id=taken.sample_id, dataset="builtin:chatterbot", source_row=0,
                                           source=None, prompt=taken.prompt, gold=taken.gold, rejected=None, meta={})])
    again = _Setup()
    make_splits(cfg, again, lambda m: None)
    ids = [s.sample_id for s in again.splits["bon"]]
    assert taken.sample_id not in ids and len(ids) == cfg.bon_prompts
    assert any("already in the DB" in n for n in again.notes)
