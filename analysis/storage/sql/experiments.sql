-- Relations written by `seam experiment` (analysis/study/): the paper's analyses in miniature.
-- Result relations are replaced as a whole at the end of each experiment run (one experiment result set
-- per DB, tagged with its run_id); the `runs` ledger keeps the history of every run with its full config.
-- Documented in README.md ("Experiments"); notebooks/paper_miniature.ipynb reads them with plain SQL.

-- Run history: the shared ledger `runs` (schema.sql); `experiment_runs` is the view of its rows with
-- command = 'experiment' (run_id, name, status, started_at, finished_at, config, versions, summary),
-- created by analysis/storage/ledger.py.

-- The axes: every PM / RM / judge used, its place on the axis and how it was made.
CREATE OR REPLACE TABLE experiment_models (
    run_id      VARCHAR,
    model       VARCHAR,            -- reference as stored in pm_scores.policy / rm_scores.reward
    role        VARCHAR,            -- policy | reward | judge
    label       VARCHAR,            -- short display name (e.g. rm-256, smollm2-sft-40)
    axis_rank   INTEGER,            -- 0 = weakest on its axis (PMs: by gold-judged quality; RMs: by training pairs)
    train_pairs INTEGER,            -- RMs: Bradley-Terry training pairs; PMs: SFT steps
    info        JSON
);

-- Quality of each model alone: RM accuracy on held-out pairs, PM gold-judged quality.
CREATE OR REPLACE TABLE model_quality (
    run_id VARCHAR, model VARCHAR, role VARCHAR, label VARCHAR,
    metric VARCHAR,                 -- acc:<pairs> | judge_mean | judge_win_vs_gold | mean_tokens | gold_logprob_mean
    value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER
);

-- Best-of-N proxy per (PM, RM) cell: the RM picks one of N samples, the gold judge scores the pick.
CREATE OR REPLACE TABLE saturation_grid (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR, policy_label VARCHAR, reward_label VARCHAR,
    policy_rank INTEGER, reward_rank INTEGER,
    metric VARCHAR,                 -- bon_gold: gold-judge score of the RM's best-of-N pick
    judge VARCHAR,                  -- the gold judge used
    bon_n INTEGER,                  -- N samples per prompt
    n INTEGER,                      -- prompts
    quality DOUBLE, quality_lo DOUBLE, quality_hi DOUBLE,
    random_quality DOUBLE,          -- N = 1 (one random sample)
    oracle_quality DOUBLE,          -- the judge picks its own favourite (upper bound)
    gain DOUBLE, gain_lo DOUBLE, gain_hi DOUBLE,          -- quality - random_quality
    win_rate DOUBLE, win_lo DOUBLE, win_hi DOUBLE,        -- P(pick beats another sample), ties 1/2
    regret DOUBLE                   -- oracle_quality - quality
);

-- Best-of-n for every n <= N (exact average over all n-subsets of the samples).
CREATE OR REPLACE TABLE saturation_curve (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR, bon_n INTEGER,
    quality DOUBLE, quality_lo DOUBLE, quality_hi DOUBLE, n INTEGER
);

-- Per prompt and cell: which sample the RM picked (tie-averaged scores).
CREATE OR REPLACE TABLE saturation_picks (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR, sample_id VARCHAR, pick_response_id VARCHAR,
    pick_gold DOUBLE, random_gold DOUBLE, oracle_gold DOUBLE, win DOUBLE, n_samples INTEGER
);

-- Does the grid saturate? Along each axis with the other model fixed (paired bootstrap over prompts).
CREATE OR REPLACE TABLE saturation_summary (
    run_id VARCHAR,
    axis VARCHAR,                   -- reward: RMs vary, PM fixed | policy: PMs vary, RM fixed
    fixed VARCHAR, fixed_label VARCHAR,
    levels INTEGER,
    saturates_at VARCHAR,           -- label of the first level no stronger level beats significantly
    saturates_rank INTEGER,
    saturated BOOLEAN,              -- false: still improving at the strongest level of the grid
    last_step DOUBLE, last_step_lo DOUBLE, last_step_hi DOUBLE,       -- strongest minus second strongest
    beyond DOUBLE, beyond_lo DOUBLE, beyond_hi DOUBLE,                -- best later level minus saturates_at
    description VARCHAR
);

-- Mismatch: RM vs reference preference. pair_kind pm_samples = two PM samples of one prompt (the
-- paper's 35%); dataset:* = held-out dataset pairs (rate = 1 - RM accuracy). Ties are counted apart.
CREATE OR REPLACE TABLE mismatch_rates (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR,
    pair_kind VARCHAR,
    reference VARCHAR,              -- judge:<ref> | human | dataset
    k INTEGER,                      -- pairs where the RM disagrees with the reference
    n INTEGER,                      -- pairs with a strict RM preference (k / n = rate)
    rate DOUBLE, lo DOUBLE, hi DOUBLE,   -- Wilson 95%
    ties INTEGER,                   -- RM ties (not in n)
    reference_ties INTEGER,         -- pairs the reference scores equal (no preference, not counted)
    rm_accuracy DOUBLE, rm_accuracy_lo DOUBLE, rm_accuracy_hi DOUBLE   -- same RM on held-out dataset pairs
);

-- Does SEAM predict where the RM fails on the PM's own samples? Prompt level, per (PM, RM) cell and pooled.
CREATE OR REPLACE TABLE seam_validation (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR,
    predictor VARCHAR,              -- seam:<variant> | seam_rel:<variant> | hack_rate:<variant> | baseline:*
    kind VARCHAR,                   -- seam | baseline
    target VARCHAR,                 -- pick_not_best (AUROC) | pair_mismatch_rate / regret (Spearman)
    stat VARCHAR,                   -- auroc | spearman
    value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER, positives INTEGER, p_value DOUBLE
);

CREATE OR REPLACE TABLE seam_validation_items (
    run_id VARCHAR, policy VARCHAR, reward VARCHAR, sample_id VARCHAR, predictor VARCHAR, score DOUBLE,
    regret DOUBLE, pick_not_best BOOLEAN, pair_mismatch_rate DOUBLE
);

-- Filtering by SEAM: drop top / bottom / random q of the pool's samples, retrain the RM on the kept
-- pairs, measure downstream. seed NULL = aggregated over seeds (per-item mean, bootstrap over items).
CREATE OR REPLACE TABLE selection_results (
    run_id VARCHAR,
    condition VARCHAR,              -- none | drop_top | drop_bottom | drop_random
    q DOUBLE, seed INTEGER,
    metric VARCHAR,                 -- acc:<pairs> | bon_gold:<pm label> | bon_gold:all | seam_heldout
    value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER,
    delta DOUBLE, delta_lo DOUBLE, delta_hi DOUBLE,   -- minus condition none (paired over items)
    vs_random DOUBLE, vs_random_lo DOUBLE, vs_random_hi DOUBLE,   -- drop_top / drop_bottom minus drop_random, same q
    kept_samples INTEGER, train_pairs INTEGER, mean_seam_kept DOUBLE
);

-- Augmentation: add M (gold > worse) pairs from the highest-SEAM pool samples vs M random pool pairs.
CREATE OR REPLACE TABLE augmentation_results (
    run_id VARCHAR,
    condition VARCHAR,              -- base | seam | random
    added_pairs INTEGER, seed INTEGER,
    metric VARCHAR,                 -- acc:<pairs> | seam_heldout | bon_gold:all
    value DOUBLE, lo DOUBLE, hi DOUBLE, n INTEGER,
    delta DOUBLE, delta_lo DOUBLE, delta_hi DOUBLE,            -- minus base
    vs_random DOUBLE, vs_random_lo DOUBLE, vs_random_hi DOUBLE, -- seam minus random (seam rows only)
    train_pairs INTEGER
);
