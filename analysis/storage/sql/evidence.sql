-- Relations written by the pre-registered study, `seam experiment --human` (analysis/study/prereg_run.py).
-- Replaced as a whole per study run (tagged with run_id; the `runs` ledger keeps every run's config and
-- its pre-registration). Read by the Evidence page (analysis/queries/evidence.py). No string literals
-- below: everything after two dashes is a comment.

-- The pre-registration, written BEFORE any model is trained or scored (also in the run's ledger config).
CREATE OR REPLACE TABLE study_design (
    run_id VARCHAR, mode VARCHAR,        -- human | proxy judge
    design JSON,                         -- splits, sizes, models, SEAM variants, endpoints, controls, power
    written_at TIMESTAMP
);

-- One row per analysed item (a prompt with a chosen and a rejected answer).
CREATE OR REPLACE TABLE study_items (
    run_id VARCHAR, item_id VARCHAR,
    split VARCHAR,                       -- A (RM training) | B (selection / acquisition pool) | C (evaluation)
    cluster INTEGER,                     -- topic cluster of the prompt (k-means on prompt embeddings)
    label_source VARCHAR                 -- dataset | hand (Spot-check labels) | proxy
);

-- Every RM of the grid and of the controls.
CREATE OR REPLACE TABLE study_models (
    run_id VARCHAR, model VARCHAR, role VARCHAR, size INTEGER, seed INTEGER,
    arm VARCHAR,                         -- human | human+synthetic | planted (positive control)
    accuracy_c DOUBLE, info JSON
);

-- Primary and secondary endpoints per (PM, RM size) cell, never pooled across cells.
CREATE OR REPLACE TABLE study_endpoint (
    run_id VARCHAR, mode VARCHAR, policy VARCHAR, rm_size INTEGER, arm VARCHAR,
    seam_variant VARCHAR,                -- alpha | paper | cand | hack_rate
    stat VARCHAR,                        -- auroc | lrt_vs_margin | lrt_vs_margin_disagreement
    value DOUBLE, lo DOUBLE, hi DOUBLE,  -- AUROC: mean over the cell's seeds, bootstrap over prompts
    n INTEGER, positives INTEGER,
    p_value DOUBLE, p_holm DOUBLE,
    equivalent BOOLEAN,                  -- TOST: 90% interval inside 0.5 +- margin
    primary_endpoint BOOLEAN, note VARCHAR
);

-- Negative (permuted PM weights) and positive (an RM broken on purpose on one topic cluster) controls, with
-- their reference rows (passed NULL); rho: Spearman correlation of the PM term alone with the plant's SEAM.
CREATE OR REPLACE TABLE study_controls (
    run_id VARCHAR, control VARCHAR, policy VARCHAR, rm_size INTEGER, seam_variant VARCHAR,
    value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER, positives INTEGER,
    passed BOOLEAN, note VARCHAR, rho DOUBLE
);

-- Power, printed before running: n per cell and the minimum detectable effect of each comparison.
CREATE OR REPLACE TABLE study_power (
    run_id VARCHAR, comparison VARCHAR, n INTEGER, positives INTEGER, mde DOUBLE, note VARCHAR
);

-- Acquisition (which B pairs to add to RM training) and selection (which B pairs to drop): accuracy
-- on C, bootstrap over seeds and items; deltas against the random arm.
CREATE OR REPLACE TABLE study_retrain (
    run_id VARCHAR, analysis VARCHAR, arm VARCHAR, q DOUBLE,
    accuracy DOUBLE, lo DOUBLE, hi DOUBLE,
    delta_vs_random DOUBLE, delta_lo DOUBLE, delta_hi DOUBLE,
    n_seeds INTEGER, n_items INTEGER
);

-- Saturation: best-of-N per (PM, RM size, N = 1, 2, 4, ... bon_n). The judge is an ensemble of heads trained
-- on B (held out from the grid); human labels do not exist for generated answers. quality: expected judge
-- score of the RM pick, mean over the size seeds, percentile bootstrap over prompts; gain: minus N = 1.
CREATE OR REPLACE TABLE study_saturation (
    run_id VARCHAR, mode VARCHAR, policy VARCHAR, rm_size INTEGER, bon_n INTEGER,
    quality DOUBLE, lo DOUBLE, hi DOUBLE,
    gain DOUBLE, gain_lo DOUBLE, gain_hi DOUBLE,
    n INTEGER, n_seeds INTEGER, note VARCHAR
);

-- Saturation tests: N = bon_n vs bon_n / 4 per RM size, and largest vs second-largest RM size at N = bon_n.
-- delta with 95% (lo, hi) and 90% (lo90, hi90) paired bootstrap intervals over prompts; TOST with +-margin
-- (absolute; margin_sd in judge-score SD units, judge_sd the SD over all samples).
CREATE OR REPLACE TABLE study_saturation_test (
    run_id VARCHAR, mode VARCHAR, policy VARCHAR, comparison VARCHAR, rm_size INTEGER, bon_n INTEGER,
    delta DOUBLE, lo DOUBLE, hi DOUBLE, lo90 DOUBLE, hi90 DOUBLE, delta_sd DOUBLE,
    margin DOUBLE, margin_sd DOUBLE, judge_sd DOUBLE, n INTEGER,
    conclusion VARCHAR,                  -- still improving | declining | saturated (TOST) | inconclusive
    note VARCHAR
);

-- The verdict in plain words, generated from the numbers above.
CREATE OR REPLACE TABLE study_verdict (
    run_id VARCHAR, mode VARCHAR, headline BOOLEAN, verdict VARCHAR
);
