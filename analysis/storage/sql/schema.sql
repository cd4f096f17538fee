-- SEAM Lens results schema (DuckDB). Every statement is idempotent: the store runs this file on
-- every write connection. Documented in README.md ("SQL interface"); notebooks and the app read these
-- relations with plain SQL.

-- Facts about the DB file itself (format migrations): key 'sample_ids' = 'per-dataset' once migrated,
-- 'legacy_sample_id_datasets' = JSON list of datasets whose rows were stored with hash(prompt, gold) ids.
CREATE TABLE IF NOT EXISTS seam_meta (
    key         VARCHAR PRIMARY KEY,
    value       VARCHAR
);

-- One row per ingested dataset (a dataset is named by the reference given on the command line).
CREATE TABLE IF NOT EXISTS datasets (
    dataset     VARCHAR PRIMARY KEY,
    format      VARCHAR,            -- trl | stackexchange | hh | gold | chatterbot
    source      VARCHAR,            -- path / hub id / builtin
    added_at    TIMESTAMP DEFAULT current_timestamp
);

-- One row per (dataset, prompt, gold response). sample_id is a content hash of (dataset, prompt, gold):
-- stable across reruns and machines, so labels and exports keyed by it survive re-ingestion; the same pair
-- in two datasets is two samples. Rows written before the dataset was part of the id keep their old ids
-- (hash(prompt, gold)); seam_meta lists the datasets that may hold such rows.
CREATE TABLE IF NOT EXISTS samples (
    sample_id   VARCHAR PRIMARY KEY,
    dataset     VARCHAR NOT NULL,
    source_row  BIGINT,             -- row number in the source (first occurrence)
    source      VARCHAR,            -- sub-source / category inside the dataset (e.g. chatterbot topic)
    prompt      VARCHAR NOT NULL,
    gold        VARCHAR NOT NULL,   -- chosen / reference answer (also stored as the 'gold' response)
    rejected    VARCHAR,            -- the dataset's own rejected answer, if any
    meta        JSON
);

-- Malformed input rows: never dropped silently. Keyed by (dataset, source_row) so reruns add nothing.
CREATE TABLE IF NOT EXISTS rejects (
    dataset     VARCHAR NOT NULL,
    source_row  BIGINT NOT NULL,
    reason      VARCHAR NOT NULL,
    raw         VARCHAR,            -- the offending row, truncated JSON
    PRIMARY KEY (dataset, source_row)
);

-- Input rows left out on purpose by --fraction / --limit (per dataset): not rejects, so counted
-- apart from them. `limit_reached`: the ingest stopped at --limit and did not read the rest of the input.
CREATE TABLE IF NOT EXISTS not_selected (
    dataset       VARCHAR PRIMARY KEY,
    n             BIGINT NOT NULL,
    limit_reached BOOLEAN NOT NULL DEFAULT false
);

-- Every response that gets scored: the gold one (variant 'gold'), the worse ones (contrast / adv /
-- generated / rejected) and policy samples (variant 'policy'). response_id = hash(sample_id, variant, text).
CREATE TABLE IF NOT EXISTS responses (
    response_id VARCHAR PRIMARY KEY,
    sample_id   VARCHAR NOT NULL,
    variant     VARCHAR NOT NULL,
    idx         INTEGER NOT NULL,   -- position within (sample, variant)
    text        VARCHAR NOT NULL,
    provenance  JSON                -- neighbour id + similarity, perturbation kinds, generator, ...
);

-- Model references exactly as given on the command line (so the same value reuses the model).
CREATE TABLE IF NOT EXISTS models (
    model       VARCHAR NOT NULL,
    role        VARCHAR NOT NULL,   -- policy | reward
    resolved    VARCHAR,            -- local directory actually loaded
    sha256      VARCHAR,            -- hash of the weight files
    info        JSON,               -- family, n_params, dtype, device, chat template used, ...
    PRIMARY KEY (model, role)
);
-- Display name set by `seam alias` (NULL: the dashboard shows the shortest unique suffix of `model`).
ALTER TABLE models ADD COLUMN IF NOT EXISTS alias VARCHAR;

-- PM log-probs of each response given its prompt: l(y) summed over response tokens (EOS included).
CREATE TABLE IF NOT EXISTS pm_scores (
    response_id  VARCHAR NOT NULL,
    policy       VARCHAR NOT NULL,
    logprob_sum  DOUBLE NOT NULL,
    n_tokens     INTEGER NOT NULL,
    logprob_mean DOUBLE NOT NULL,
    PRIMARY KEY (response_id, policy)
);

-- RM scalar reward r(x, y).
CREATE TABLE IF NOT EXISTS rm_scores (
    response_id VARCHAR NOT NULL,
    reward      VARCHAR NOT NULL,
    score       DOUBLE NOT NULL,
    PRIMARY KEY (response_id, reward)
);

-- Prompt embeddings (MiniLM, L2-normalised) and their 2-D UMAP coordinates, cached for the prompt map.
CREATE TABLE IF NOT EXISTS prompt_embeddings (
    sample_id   VARCHAR PRIMARY KEY,
    embedding   FLOAT[]
);
CREATE TABLE IF NOT EXISTS prompt_map (
    sample_id   VARCHAR PRIMARY KEY,
    x           DOUBLE,
    y           DOUBLE
);

-- One row per CLI invocation that writes: full config, package versions, model hashes, summary.
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    command     VARCHAR,
    status      VARCHAR,            -- running | done | failed | interrupted (killed; see ledger.py)
    started_at  TIMESTAMP,
    finished_at TIMESTAMP,
    config      JSON,
    versions    JSON,
    models      JSON,
    summary     JSON
);
-- Who wrote a run (analysis/storage/ledger.py): a `running` row whose process is gone is marked
-- `interrupted` by the next run, so a killed run never stays `running` forever.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid INTEGER;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS proc_start VARCHAR;   -- the process's start time (pid reuse guard)

-- Imported RLHF results of the user's own runs (seam import-rlhf FILE.csv).
CREATE TABLE IF NOT EXISTS rlhf_results (
    policy      VARCHAR NOT NULL,
    reward      VARCHAR NOT NULL,
    score       DOUBLE NOT NULL,
    source      VARCHAR,
    PRIMARY KEY (policy, reward, source)
);

-- Materialised per-sample metrics at the default setting (alpha = 1, hard hacking), refreshed at the
-- end of every precompute (store.finalize). Other alpha/tau: SELECT * FROM seam_at(alpha, tau).
CREATE TABLE IF NOT EXISTS seam_metrics (
    sample_id VARCHAR, variant VARCHAR, policy VARCHAR, reward VARCHAR,
    seam DOUBLE, seam_rel DOUBLE, hack_rate DOUBLE, k INTEGER,
    pm_prefers_gold BOOLEAN, rm_prefers_gold BOOLEAN, mean_tokens DOUBLE, gold_tokens INTEGER,
    gold_score DOUBLE,   -- the RM's reward of the gold response (the filter page's "gold reward", without a join)
    rank_agreement DOUBLE
);
ALTER TABLE seam_metrics ADD COLUMN IF NOT EXISTS gold_score DOUBLE;
CREATE OR REPLACE VIEW seam AS
SELECT sample_id, variant, policy, reward, seam, seam_rel, hack_rate, k FROM seam_metrics;

-- RM accuracy per RM x variant on (gold > worse) pairs; refreshed by store.finalize from the view
-- rm_pair_outcomes (materialised because the dashboard's overview reads it on every load).
CREATE TABLE IF NOT EXISTS rm_accuracy (
    reward VARCHAR, variant VARCHAR, n INTEGER, correct INTEGER, wrong INTEGER, ties INTEGER
);
-- Point lookups of the dashboard (one sample's responses and their scores: the browser's detail panel, the
-- spot-check reveal). DuckDB scans an index only on a single column, so the composite primary keys of the
-- score tables do not serve `response_id = ?`; without these a lookup scans every score (seconds at 1M samples).
CREATE INDEX IF NOT EXISTS responses_by_sample ON responses (sample_id);
CREATE INDEX IF NOT EXISTS pm_scores_by_response ON pm_scores (response_id);
CREATE INDEX IF NOT EXISTS rm_scores_by_response ON rm_scores (response_id);

-- ---- seam rlhf-grid (real online-RL runs per PM x RM cell) -------------------------------------
-- Rows written by `seam rlhf-grid` carry source = 'rlhf-grid:<grid hash>' and the columns below;
-- rows imported from a CSV leave them NULL. score = win rate of the trained policy's answers over the
-- starting PM's answers on held-out prompts under the judge (ties 1/2), score_lo/hi its bootstrap 95%.
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS cell_id VARCHAR;          -- resume key of the cell
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS run_id VARCHAR;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS algorithm VARCHAR;        -- e.g. trl-rloo
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS score_lo DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS score_hi DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS n_eval INTEGER;           -- held-out prompts judged
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge VARCHAR;            -- RM that judged (not in the grid)
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_kind VARCHAR;       -- 'proxy judge' | 'given judge'
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_start DOUBLE;       -- mean judge reward, starting PM
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_trained DOUBLE;     -- mean judge reward, trained PM
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_gain DOUBLE;        -- paired mean of the difference
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_gain_lo DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS judge_gain_hi DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS kl DOUBLE;                -- KL(trained || start), nats/answer
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS kl_lo DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS kl_hi DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS steps INTEGER;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS seed INTEGER;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS beta DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS model_dir VARCHAR;        -- the trained policy
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS wall_s DOUBLE;
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS config JSON;              -- the full run config
ALTER TABLE rlhf_results ADD COLUMN IF NOT EXISTS finished_at TIMESTAMP;
-- Training curves of each cell: one row per optimizer step (TRL's logged metrics).
CREATE TABLE IF NOT EXISTS rlhf_curves (
    source      VARCHAR NOT NULL,
    cell_id     VARCHAR NOT NULL,
    policy      VARCHAR NOT NULL,
    reward      VARCHAR NOT NULL,
    step        INTEGER NOT NULL,
    rm_reward   DOUBLE,             -- mean RM reward of the step's samples (before the KL penalty)
    rm_reward_std DOUBLE,
    kl          DOUBLE,             -- mean per-token KL to the starting PM (TRL's estimate)
    mean_length DOUBLE,             -- mean completion length in tokens
    loss        DOUBLE,
    entropy     DOUBLE,
    PRIMARY KEY (cell_id, step)
);
-- Every held-out evaluation pair of each cell: the starting PM's and the trained policy's answer to one
-- prompt, with the judge's score of each. Written in the cell's transaction (store.write_rlhf_cell). The
-- Spot-check page queues them for blind hand labels (keyed by start_id / trained_id, content ids); where a
-- cell has hand labels, the Saturation page shows their win rate instead of the judge's.
CREATE TABLE IF NOT EXISTS rlhf_eval_pairs (
    source        VARCHAR NOT NULL,   -- the grid (rlhf_results.source)
    cell_id       VARCHAR NOT NULL,
    policy        VARCHAR NOT NULL,   -- the starting PM
    reward        VARCHAR NOT NULL,   -- the RM the cell trained against
    idx           INTEGER NOT NULL,   -- position of the prompt among the held-out prompts
    prompt        VARCHAR NOT NULL,
    start_id      VARCHAR NOT NULL,   -- content id of the starting PM's answer (shared by the PM's cells)
    start_text    VARCHAR NOT NULL,
    start_judge   DOUBLE,             -- judge reward of the starting PM's answer
    trained_id    VARCHAR NOT NULL,   -- content id of the trained policy's answer (per cell)
    trained_text  VARCHAR NOT NULL,
    trained_judge DOUBLE,
    PRIMARY KEY (cell_id, idx)
);

-- The pre-registered study (`seam experiment --human`; its other relations: evidence.sql).
-- Inputs of the SEAM macros (metrics.sql: study_vs_gold, seam_variants), here because the macros bind to it: per item x response x PM x RM.
CREATE TABLE IF NOT EXISTS study_probe_scores (
    run_id VARCHAR, item_id VARCHAR, probe_id VARCHAR,
    variant VARCHAR,                     -- gold (human-chosen) | adv | contrast
    policy VARCHAR, reward VARCHAR,
    logprob_sum DOUBLE, n_tokens INTEGER, score DOUBLE
);
