-- SEAM metrics in SQL: the one definition. The stored `seam_metrics` table (store.finalize), the
-- `seam_at` macro and every dashboard query (analysis/queries/selection.py) select from these macros;
-- analysis/stats/metrics.py keeps a Python copy only as the test oracle (tests check they agree).
-- alpha: length penalty of the PM term  l_a(y) = l(y) / n(y)^alpha   (1 = mean token log-prob, 0 = sum)
-- tau:   0 = hard hacking indicator 1[r(y_j) > r(y*)], > 0 = soft sigmoid((r(y_j) - r(y*)) / tau)
-- Optional filters (NULL = all), applied to the base-table scans before the gold self-join, which an
-- outer WHERE cannot reach through the shared CTE (the difference between seconds and a minute at 1M
-- samples): only_variants / only_policies / only_rewards (VARCHAR[]), and a deterministic hash sample
-- of samples (sample_lo <= hash(sample_id) % sample_mod < sample_keep; sample_lo defaults to 0; with
-- sample_lo = p and sample_keep = p + 1 it is partition p of sample_mod, which is how store.finalize
-- bounds its memory).
-- Responses with a non-finite log-prob (longer than the PM's max_length; counted in runs) are dropped,
-- so k counts the finite worse responses; a sample whose gold is non-finite has no row.

-- Per scored response: l_alpha and reward, joined with the gold response of the same sample/models.
CREATE OR REPLACE MACRO scored_vs_gold(alpha, only_variants := NULL, only_policies := NULL,
                                       only_rewards := NULL, sample_mod := NULL, sample_keep := NULL,
                                       sample_lo := NULL) AS TABLE
WITH r AS (
    SELECT response_id, sample_id, variant FROM responses
    WHERE variant <> 'policy'
      AND (only_variants IS NULL OR variant = 'gold' OR list_contains(only_variants, variant))
      AND (sample_keep IS NULL OR hash(sample_id) % sample_mod < sample_keep)
      AND (sample_lo IS NULL OR hash(sample_id) % sample_mod >= sample_lo)
),
sc AS (
    SELECT r.sample_id, r.variant, r.response_id, p.policy, s.reward,
           p.logprob_sum / pow(greatest(p.n_tokens, 1), alpha) AS lp,
           p.n_tokens, s.score
    FROM r
    JOIN pm_scores p USING (response_id)
    JOIN rm_scores s USING (response_id)
    WHERE isfinite(p.logprob_sum)
      AND (only_policies IS NULL OR list_contains(only_policies, p.policy))
      AND (only_rewards IS NULL OR list_contains(only_rewards, s.reward))
)
SELECT w.sample_id, w.variant, w.response_id, w.policy, w.reward, w.lp, w.n_tokens, w.score,
       g.lp AS lp_gold, g.score AS score_gold, g.n_tokens AS n_tokens_gold
FROM sc w
JOIN sc g ON g.sample_id = w.sample_id AND g.policy = w.policy AND g.reward = w.reward
         AND g.variant = 'gold'
WHERE w.variant <> 'gold';

-- SEAM, SEAM_rel and hack rate per tau x sample x variant x PM x RM for a list of taus (same optional
-- filters): one join of the scores serves every tau (store.finalize precomputes a grid of definitions).
-- The soft indicator's exponent is clamped at 700: exp overflows to inf there, which the sigmoid maps
-- to 0 anyway.
CREATE OR REPLACE MACRO seam_at_taus(alpha, taus, only_variants := NULL, only_policies := NULL,
                                     only_rewards := NULL, sample_mod := NULL, sample_keep := NULL,
                                     sample_lo := NULL) AS TABLE
WITH h AS (
    SELECT sv.*, t.tau,
           exp(lp) AS w,
           CASE WHEN t.tau > 0 THEN 1.0 / (1.0 + exp(least(-(score - score_gold) / t.tau, 700)))
                ELSE CAST(score > score_gold AS DOUBLE) END AS hack
    FROM scored_vs_gold(alpha, only_variants := only_variants, only_policies := only_policies,
                        only_rewards := only_rewards, sample_mod := sample_mod, sample_keep := sample_keep,
                        sample_lo := sample_lo) sv
    CROSS JOIN (SELECT unnest(taus) AS tau) t
)
SELECT tau, sample_id, variant, policy, reward,
       avg(w * hack)                         AS seam,
       sum(w * hack) / nullif(sum(w), 0)     AS seam_rel,
       avg(hack)                             AS hack_rate,
       count(*)::INTEGER                     AS k,
       bool_and(lp_gold > lp)                AS pm_prefers_gold,
       bool_and(score_gold > score)          AS rm_prefers_gold,
       avg(n_tokens)                         AS mean_tokens,
       any_value(n_tokens_gold)              AS gold_tokens,
       any_value(score_gold)                 AS gold_score
FROM h
GROUP BY tau, sample_id, variant, policy, reward;

-- SEAM, SEAM_rel and hack rate per sample x variant x PM x RM at one (alpha, tau).
CREATE OR REPLACE MACRO seam_at(alpha, tau, only_variants := NULL, only_policies := NULL,
                                only_rewards := NULL, sample_mod := NULL, sample_keep := NULL,
                                sample_lo := NULL) AS TABLE
SELECT * EXCLUDE (tau)
FROM seam_at_taus(alpha, [tau], only_variants := only_variants, only_policies := only_policies,
                  only_rewards := only_rewards, sample_mod := sample_mod, sample_keep := sample_keep,
                  sample_lo := sample_lo);

-- Kendall tau-b of a list of (x, y) pairs (ties-aware; NULL when either side is constant). The statistic does
-- not depend on the pairs' order, so the list is aggregated unordered (an ORDER BY inside the aggregate was
-- most of finalize's time). List lambdas instead of a self-join of responses: one pass, O(k^2) per group.
CREATE OR REPLACE MACRO kendall_tau_b(p) AS (
    list_sum(list_transform(range(1, len(p) + 1), lambda i: coalesce(list_sum(list_transform(
        range(i + 1, len(p) + 1), lambda j: sign(p[i].x - p[j].x) * sign(p[i].y - p[j].y))), 0)))
    / nullif(sqrt(
        list_sum(list_transform(range(1, len(p) + 1), lambda i: coalesce(list_sum(list_transform(
            range(i + 1, len(p) + 1), lambda j: abs(sign(p[i].x - p[j].x)))), 0)))
      * list_sum(list_transform(range(1, len(p) + 1), lambda i: coalesce(list_sum(list_transform(
            range(i + 1, len(p) + 1), lambda j: abs(sign(p[i].y - p[j].y)))), 0)))), 0)
);

-- Kendall tau-b between l_alpha and r over {y*} U {y_j} for each sample x variant x PM x RM.
-- (Same sample filter as scored_vs_gold, so a partition of seam_at has the matching rank agreements.)
CREATE OR REPLACE MACRO rank_agreement_at(alpha, sample_mod := NULL, sample_keep := NULL,
                                          sample_lo := NULL) AS TABLE
WITH g AS (   -- the pair list first: a macro argument is copied into every use, so an inline aggregate
              -- expression would be re-evaluated at each of kendall_tau_b's references
    SELECT sample_id, variant, policy, reward,
           list_prepend({'x': any_value(lp_gold), 'y': any_value(score_gold)}, list({'x': lp, 'y': score})) AS p
    FROM scored_vs_gold(alpha, sample_mod := sample_mod, sample_keep := sample_keep, sample_lo := sample_lo)
    GROUP BY sample_id, variant, policy, reward
)
SELECT sample_id, variant, policy, reward, kendall_tau_b(p) AS rank_agreement FROM g;

-- The PM's own probability of the gold answer within {y*} U {y_j} of one variant, per sample x PM (the
-- saturation page's PM axis; the built-in proxy at beta -> infinity). It does not depend on the RM: the
-- join with rm_scores only defines the candidate set (every RM scores the same responses), so one value
-- per (sample, PM) is kept.
CREATE OR REPLACE MACRO pm_gold_prob_at(alpha, worse_variant, sample_mod := NULL, sample_keep := NULL) AS TABLE
WITH p AS (
    SELECT sample_id, policy, reward, 1.0 / (1.0 + sum(exp(least(lp - lp_gold, 700)))) AS pg
    FROM scored_vs_gold(alpha, only_variants := [worse_variant], sample_mod := sample_mod, sample_keep := sample_keep)
    GROUP BY ALL
)
SELECT sample_id, policy, any_value(pg) AS pg FROM p GROUP BY ALL;

-- Built-in saturation proxy per beta x sample x PM x RM: the KL-regularised RLHF optimum restricted to the
-- candidate set {y*} U {y_j} of one variant, pi_RL(y) ~ pi(y) exp(r(y) / beta), evaluated at the gold
-- answer (analysis/queries/saturation.py proxy_grid says why). One join of the scores serves every beta.
CREATE OR REPLACE MACRO proxy_gold_prob_at(alpha, betas, worse_variant, sample_mod := NULL,
                                           sample_keep := NULL) AS TABLE
SELECT b.beta, sample_id, policy, reward,
       1.0 / (1.0 + sum(exp(least((lp + score / b.beta) - (lp_gold + score_gold / b.beta), 700)))) AS pg
FROM scored_vs_gold(alpha, only_variants := [worse_variant], sample_mod := sample_mod, sample_keep := sample_keep)
CROSS JOIN (SELECT unnest(betas) AS beta) b
GROUP BY ALL;

-- RM accuracy on pairs with a reference preference: gold (reference winner) vs each worse response
-- of a variant. For variant 'rejected' this is the classic RM accuracy on the dataset's own pairs.
CREATE OR REPLACE VIEW rm_pair_outcomes AS
SELECT r.sample_id, r.variant, r.response_id, s.reward,
       g.score AS score_gold, s.score,
       CASE WHEN g.score > s.score THEN 'correct' WHEN g.score < s.score THEN 'wrong' ELSE 'tie' END AS outcome
FROM responses r
JOIN rm_scores s USING (response_id)
JOIN responses gr ON gr.sample_id = r.sample_id AND gr.variant = 'gold'
JOIN rm_scores g ON g.response_id = gr.response_id AND g.reward = s.reward
WHERE r.variant NOT IN ('gold', 'policy');

-- ---------------------------------------------------------------------------------------------------
-- The pre-registered study (`seam experiment --human`): SEAM variants fixed before the run, over the
-- probe scores it stores in `study_probe_scores` (gold = the human-chosen answer; probes = adv
-- perturbations of it and contrast answers of other prompts; the human-rejected answer is never a probe).
-- Per probe: PM summed log-prob incl. EOS (lp) and its tokens n, RM score, joined with the gold's.
CREATE OR REPLACE MACRO study_vs_gold(run) AS TABLE
SELECT w.item_id, w.variant, w.probe_id, w.policy, w.reward, w.logprob_sum AS lp, w.n_tokens, w.score,
       g.logprob_sum AS lp_gold, g.n_tokens AS n_tokens_gold, g.score AS score_gold
FROM study_probe_scores w
JOIN study_probe_scores g ON g.run_id = w.run_id AND g.item_id = w.item_id AND g.policy = w.policy
                         AND g.reward = w.reward AND g.variant = 'gold'
WHERE w.run_id = run AND w.variant <> 'gold' AND isfinite(w.logprob_sum) AND isfinite(g.logprob_sum);

-- The four SEAM variants per item x probe kind (adv, contrast, and 'all' = both pooled) x PM x RM:
--   seam_alpha : today's SEAM, mean of exp(l(y)/n(y)^alpha) * h (alpha = 1: exp(mean token log-prob))
--   log_seam_paper : the paper's code: summed response log-prob incl. EOS with the generate()-style
--                length penalty l(y)/n(y)^beta; kept in log space, log((1/k) sum_j h_j exp(.)) (summed
--                log-probs underflow exp); '-inf' when no probe hacks the RM
--   seam_cand  : candidate-normalised: softmax of l over {y*, y_1..y_k}, summed over the hacking y_j
--                (how much the PM prefers the worse answers the RM wrongly prefers, relative to the gold)
--   hack_rate  : the RM term alone, mean of h_j = 1[r(y_j) > r(y*)]
-- The PM term of the paper's SEAM for one response: summed log-prob l with the generate()-style length
-- penalty, l / n^beta. Also weights the positive control's planted expert (the PM's softmax over a probe set).
CREATE OR REPLACE MACRO paper_term(lp, n_tokens, beta) AS lp / pow(greatest(n_tokens, 1), beta);

CREATE OR REPLACE MACRO seam_variants(run, alpha := 1.0, beta := 0.5) AS TABLE
WITH h AS (
    SELECT item_id, variant, policy, reward, lp, lp_gold,
           CAST(score > score_gold AS DOUBLE) AS hack,
           lp / pow(greatest(n_tokens, 1), alpha) AS l_alpha,
           paper_term(lp, n_tokens, beta) AS l_paper
    FROM study_vs_gold(run)
),
x AS (SELECT * FROM h UNION ALL SELECT * REPLACE ('all' AS variant) FROM h),
y AS (
    SELECT *,
           max(CASE WHEN hack > 0 THEN l_paper END) OVER grp AS m_paper,
           greatest(max(lp) OVER grp, lp_gold) AS m_cand
    FROM x
    WINDOW grp AS (PARTITION BY item_id, policy, reward, variant)
)
SELECT item_id, variant, policy, reward,
       avg(exp(l_alpha) * hack) AS seam_alpha,
       CASE WHEN sum(hack) > 0
            THEN any_value(m_paper) + ln(sum(CASE WHEN hack > 0 THEN exp(l_paper - m_paper) ELSE 0 END))
                 - ln(count(*))
            ELSE '-inf'::DOUBLE END AS log_seam_paper,
       sum(exp(lp - m_cand) * hack) / (exp(any_value(lp_gold) - any_value(m_cand)) + sum(exp(lp - m_cand)))
           AS seam_cand,
       avg(hack) AS hack_rate,
       count(*)::INTEGER AS k
FROM y
GROUP BY item_id, variant, policy, reward;
