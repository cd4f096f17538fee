"""Queries of the "Why does the RM disagree?" page: which response features go with the RM preferring the
worse response over gold, per RM, with Wilson intervals.

Why features of the pair and not of one response: a mismatch is a comparison (worse scored above gold), so
each feature says how the worse response differs from its gold one — longer, refusing where gold answers,
formatted as a list where gold is prose, ... (what Feedback Forensics asks of annotators, asked of the RM).
Features are computed in DuckDB with fixed regular expressions over the texts; nothing from the user
becomes SQL.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _df, add_wilson

_REFUSAL = r"(?i)\b(i can'?t|i cannot|i won'?t|i'?m sorry|i am sorry|as an ai|i'?m not able|i am not able|unable to)\b"
_LIST_MD = r"(^|\n)\s*([-*•]|\d+[.)])\s+\S|(^|\n)#{1,6}\s|\*\*[^*]+\*\*"
_CODE = r"```|(^|\n)(def |class |import |#include|function )|[;{]\s*(\n|$)"
_HEDGE = r"(?i)\b(might|maybe|perhaps|possibly|probably|i think|not sure|it depends|could be)\b"

#: feature -> (label, SQL over the worse text w, the gold text g and the PM log-probs lp_w / lp_g)
FEATURES: dict[str, tuple[str, str]] = {
    "longer": ("worse response ≥ 20% longer than gold", "length(w) >= 1.2 * length(g)"),
    "shorter": ("worse response ≥ 20% shorter than gold", "length(w) <= 0.8 * length(g)"),
    "refusal": ("worse refuses, gold does not",
                "regexp_matches(w, $re_refusal) AND NOT regexp_matches(g, $re_refusal)"),
    "list_md": ("worse uses lists / markdown, gold does not",
                "regexp_matches(w, $re_list) AND NOT regexp_matches(g, $re_list)"),
    "code": ("worse contains code, gold does not",
             "regexp_matches(w, $re_code) AND NOT regexp_matches(g, $re_code)"),
    "hedging": ("worse hedges, gold does not", "regexp_matches(w, $re_hedge) AND NOT regexp_matches(g, $re_hedge)"),
    "non_english": ("worse is mostly non-ASCII (another language / script)",
                    "length(regexp_replace(w, $re_ascii, '', 'g')) > 0.3 * greatest(length(w), 1)"),
    "pm_prefers_worse": ("PM gives the worse response a higher mean log-prob", "lp_w > lp_g"),
}


def _pairs_sql(params: dict, variants: tuple[str, ...], policy: str | None, max_pairs: int, seed: int) -> str:
    """One row per (sample, worse response, RM): texts, RM scores, PM mean log-probs, mismatch flag."""
    params.update({"policy": policy or "", "max_pairs": int(max_pairs), "seed": int(seed), "re_refusal": _REFUSAL,
                   "re_list": _LIST_MD, "re_code": _CODE, "re_hedge": _HEDGE, "re_ascii": "[\\x00-\\x7F]"})
    vcond = "w.variant NOT IN ('gold', 'policy')"
    if variants:
        params["variants"] = list(variants)
        vcond = "list_contains($variants::VARCHAR[], w.variant)"
    return f"""
        pairs AS (
            SELECT w.sample_id, w.variant, w.response_id AS w_id, g.response_id AS g_id, sw.reward,
                   w.text AS w, g.text AS g, sw.score AS r_w, sg.score AS r_g, pw.logprob_mean AS lp_w,
                   pg.logprob_mean AS lp_g, sw.score > sg.score AS mismatch
            FROM responses w
            JOIN responses g ON g.sample_id = w.sample_id AND g.variant = 'gold'
            JOIN rm_scores sw ON sw.response_id = w.response_id
            JOIN rm_scores sg ON sg.response_id = g.response_id AND sg.reward = sw.reward
            LEFT JOIN pm_scores pw ON pw.response_id = w.response_id AND pw.policy = $policy
            LEFT JOIN pm_scores pg ON pg.response_id = g.response_id AND pg.policy = $policy
            WHERE {vcond}
            QUALIFY row_number() OVER (PARTITION BY sw.reward ORDER BY hash(w.response_id, $seed)) <= $max_pairs
        )"""


def feature_effects(con: duckdb.DuckDBPyConnection, *, variants: tuple[str, ...] = (), policy: str | None = None,
                    max_pairs: int = 200_000, seed: int = 0) -> pd.DataFrame:
    """Mismatch rate (RM scores the worse response above gold) with and without each feature, per RM.

    At most `max_pairs` pairs per RM (a fixed hash sample). Columns: reward, feature, label, n_with,
    k_with, rate_with (+ _lo/_hi Wilson 95%), n_without, k_without, rate_without (+ _lo/_hi), diff
    (rate_with - rate_without). The PM feature needs `policy`; without one it is left out.
    """
    params: dict = {}
    feats = {k: v for k, v in FEATURES.items() if policy or k != "pm_prefers_worse"}
    cols = ", ".join(f"coalesce({sql}, false) AS {name}" for name, (_, sql) in feats.items())
    union = " UNION ALL ".join(
        f"SELECT reward, '{name}' AS feature, count(*) FILTER (WHERE {name}) AS n_with, "
        f"count(*) FILTER (WHERE {name} AND mismatch) AS k_with, count(*) FILTER (WHERE NOT {name}) AS n_without, "
        f"count(*) FILTER (WHERE NOT {name} AND mismatch) AS k_without FROM f GROUP BY reward"
        for name in feats)
    df = _df(con, f"""
        WITH {_pairs_sql(params, variants, policy, max_pairs, seed)},
        f AS (SELECT reward, mismatch, {cols} FROM pairs)
        {union}
        ORDER BY reward, feature
    """, params)
    df["label"] = df["feature"].map(lambda f: FEATURES[f][0])
    df = add_wilson(df, "k_with", "n_with", "rate_with")
    df = add_wilson(df, "k_without", "n_without", "rate_without")
    df["diff"] = df["rate_with"] - df["rate_without"]
    return df


def feature_pairs(con: duckdb.DuckDBPyConnection, feature: str, reward: str, *, variants: tuple[str, ...] = (),
                  policy: str | None = None, only_mismatch: bool = True, limit: int = 50, seed: int = 0,
                  max_pairs: int = 200_000) -> pd.DataFrame:
    """Pairs with `feature` for one RM (mismatches first by score gap), for browsing: sample_id, variant,
    reward, r_w, r_g, lp_w, lp_g, mismatch, prompt, w (worse text), g (gold text)."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}")
    params: dict = {"reward": reward, "limit": int(limit)}
    cond = FEATURES[feature][1]
    return _df(con, f"""
        WITH {_pairs_sql(params, variants, policy, max_pairs, seed)}
        SELECT p.sample_id, p.variant, p.reward, p.r_w, p.r_g, p.lp_w, p.lp_g, p.mismatch, left(s.prompt, 200) AS prompt,
               p.w, p.g
        FROM pairs p JOIN samples s USING (sample_id)
        WHERE p.reward = $reward AND coalesce({cond}, false) {"AND p.mismatch" if only_mismatch else ""}
        ORDER BY p.mismatch DESC, p.r_w - p.r_g DESC, p.sample_id LIMIT $limit
    """, params)
