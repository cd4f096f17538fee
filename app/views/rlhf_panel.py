"""Saturation page panel: the real RLHF grid (`seam rlhf-grid`) and how far the cheap proxy agrees with it.

Why a panel of its own: the proxy grid above it is a closed-form stand-in for KL-regularised RLHF; this
panel shows actual RL runs (TRL RLOO per PM × RM cell, judged on held-out prompts by an RM outside the
grid), their training curves, and the rank agreement between proxy and real cells — so a user learns
whether the proxy can be trusted on their models. Nothing here fails when the relations are absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from analysis.queries import rlhf as rq
from analysis.queries.saturation import proxy_grid
from analysis.stats.estimators import EXACT_MAX_N
from analysis.stats.rlhf import proxy_vs_real
from analysis.storage import labels as labels_mod
from app import common


def _short(ref: str) -> str:
    return Path(str(ref).rstrip("/")).name or str(ref)


def with_human_labels(g: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """The grid's cells with the value the page shows: the hand-labeled win rate where the cell's held-out
    pairs have labels (they take precedence over any judge), else the judge's. Adds value / value_lo /
    value_hi / value_n and `measured_by` ('human labels, n=…' or the judge kind)."""
    out = g.merge(human, on="cell_id", how="left") if not human.empty else g.assign(n=math.nan)
    has = out["n"].notna() & (out["n"] > 0) if "n" in out else pd.Series(False, index=out.index)
    for v, hv, jv in (("value", "human", "score"), ("value_lo", "human_lo", "score_lo"),
                      ("value_hi", "human_hi", "score_hi")):
        out[v] = out[hv].where(has, out[jv]) if hv in out else out[jv]
    out["value_n"] = out["n"].where(has, out["n_eval"])
    out["measured_by"] = [f"human labels, n={int(n)}" if h else str(k)
                          for h, n, k in zip(has, out["n"], out["judge_kind"])]
    return out


def render(variant: str | None) -> None:
    """The panel; `variant` = the worse-response variant the page's proxy uses."""
    st.subheader("Real RLHF grid (`seam rlhf-grid`)")
    cells = common.run(rq.rlhf_cells)
    if cells.empty:
        st.caption("No real RL runs in this DB. `seam rlhf-grid --policy PM1 --policy PM2 --reward RM1 --reward RM2 "
                   "--db THIS.duckdb` trains one policy per cell with TRL (RLOO, KL to the starting PM) and judges "
                   "it on held-out prompts; `--quick` makes a one-cell smoke run.")
        return
    sources = list(dict.fromkeys(cells["source"]))
    src = st.selectbox("grid", sources, key="rl_grid", help="one grid = one set of training/eval settings and judge "
                       "(newest first)") if len(sources) > 1 else sources[0]
    g = cells[cells["source"] == src].reset_index(drop=True)
    store = common.label_store()
    cons = labels_mod.consensus(store.all(), store.finals())
    g = with_human_labels(g, common.run(rq.rlhf_human_win, cons))   # matched by answer ids, whatever the kind
    first = g.iloc[0]
    n_human = int(g["measured_by"].str.startswith("human").sum())
    judge_note = (f"judge {common.md(_short(first['judge']))} — **{common.md(first['judge_kind'])}**: an RM outside "
                  "the grid, not human labels")
    source_note = (f"**{n_human} of {len(g)} cell(s) use human labels** (Spot-check, pairs \"RLHF: start vs "
                   f"trained\"; they take precedence), the rest the {judge_note}" if n_human else
                   f"{judge_note}; hand labels of the held-out pairs (Spot-check, pairs \"RLHF: start vs "
                   "trained\") would take precedence")
    st.caption(f"{len(g)} cell(s), {first['algorithm']}, {int(first['steps'])} steps, β = {first['beta']:g}, seed "
               f"{int(first['seed'])}; value = win rate of the trained policy's answers over the starting PM's on "
               f"held-out prompts (ties ½; 0.5 = no change), bootstrap 95%; {source_note}.")
    pms = list(dict.fromkeys(g["policy"]))
    rms = list(dict.fromkeys(g["reward"]))
    z = g.pivot_table(index="policy", columns="reward", values="value").reindex(index=pms, columns=rms)
    by = {(r.policy, r.reward): r for r in g.itertuples()}
    text = [[(f"{common.ci_pct(c.value, c.value_lo, c.value_hi)}<br>{common.plot_text(c.measured_by)}"
              f"{'' if c.measured_by.startswith('human') else f', n={int(c.n_eval)}'}, KL {common.num(c.kl)}"
              if (c := by.get((p, r))) is not None else "") for r in rms] for p in pms]
    fig = go.Figure(go.Heatmap(z=z.values, x=[common.plot_text(_short(r)) for r in rms],
                               y=[common.plot_text(_short(p)) for p in pms], text=text, texttemplate="%{text}",
                               colorscale="RdBu", zmid=0.5, zmin=0, zmax=1, colorbar_title="win rate",
                               hoverinfo="skip"))
    fig.update_layout(xaxis_title="reward model (RL reward)", yaxis_title="starting policy model",
                      height=140 + 80 * len(pms), margin=dict(t=10))
    st.plotly_chart(fig, key="rl_heat")
    st.dataframe(pd.DataFrame({
        "PM": [_short(p) for p in g["policy"]], "RM": [_short(r) for r in g["reward"]],
        "n": g["value_n"].astype(int), "measured by": g["measured_by"],
        "win rate [95%]": [common.ci_pct(a, b, c) for a, b, c in zip(g["value"], g["value_lo"], g["value_hi"])],
        "judge win rate [95%]": [common.ci_pct(a, b, c) for a, b, c in
                                 zip(g["score"], g["score_lo"], g["score_hi"])],
        "judge gain [95%]": [common.ci_num(a, b, c) for a, b, c in
                             zip(g["judge_gain"], g["judge_gain_lo"], g["judge_gain_hi"])],
        "KL reached, nats [95%]": [common.ci_num(a, b, c) for a, b, c in zip(g["kl"], g["kl_lo"], g["kl_hi"])],
        "train+eval s": g["wall_s"],
    }), hide_index=True, key="rl_table")

    curves = common.run(rq.rlhf_curves, src)
    if not curves.empty:
        figc = make_subplots(rows=1, cols=3, subplot_titles=("RM reward (before KL)", "KL to start (per token)",
                                                              "answer length (tokens)"))
        for i, (cid, c) in enumerate(curves.groupby("cell_id", sort=False)):
            name = common.plot_text(f"{_short(c['policy'].iloc[0])} × {_short(c['reward'].iloc[0])}")
            for col, y in enumerate(("rm_reward", "kl", "mean_length"), start=1):
                figc.add_scatter(x=c["step"], y=c[y], mode="lines+markers", name=name, legendgroup=cid,
                                 showlegend=col == 1, line=dict(color=f"hsl({(i * 67) % 360},60%,45%)"),
                                 row=1, col=col)
        figc.update_xaxes(title_text="step")
        figc.update_layout(height=320, margin=dict(t=40))
        st.plotly_chart(figc, key="rl_curves")

    # ---------------------------------------------------------------- proxy vs real
    st.markdown("**Proxy vs real**: does the built-in proxy order the cells the way the RL runs do?")
    beta = float(first["beta"])
    proxy = common.run(proxy_grid, variant=variant, alpha=1.0, beta=beta) if variant else pd.DataFrame()
    joined = [dict(policy=c.policy, reward=c.reward, real=float(c.value), proxy=float(p.iloc[0]))
              for c in g.itertuples()
              if not proxy.empty and not (p := proxy[(proxy["policy"] == c.policy)
                                                     & (proxy["reward"] == c.reward)]["quality"]).empty]
    if not joined:
        st.caption("No proxy values for these models: score them with `seam precompute` on this DB (rlhf-grid does "
                   "it unless run with --no-proxy).")
        return
    res = proxy_vs_real(joined)
    r = res.rank
    if r.n < 3 or math.isnan(r.value):
        st.info(f"Spearman rank correlation needs ≥ 3 cells with distinct values on both sides; this grid has "
                f"{r.n} cell(s) with a proxy value. Run a 2 × 2 grid to compare.")
    else:
        what = (f"n = {r.n} cells; proxy = P(gold) under π·exp(r/β) with the grid's β = {beta:g}, variant "
                f"{variant}; real = win rate by human labels in {n_human} cell(s), by the judge in the others")
        if r.n <= EXACT_MAX_N:   # a bootstrap over a handful of cells is degenerate: give the exact test
            st.metric("Spearman ρ, proxy vs real", f"{r.value:.2f}", help=what)
            st.caption(f"n = {r.n} cells: exact permutation p = {common.num(r.p_value)} (two-sided; the chance "
                       f"that {r.n} cells ranked at random agree this well). A bootstrap interval over so few "
                       "cells is not informative, so none is shown.")
        else:
            st.metric("Spearman ρ, proxy vs real (bootstrap 95% over cells)",
                      f"{r.value:.2f} [{r.lo:.2f}, {r.hi:.2f}]", help=what)
            st.caption(f"n = {r.n} cells; with few cells the interval is wide — read it before the point value.")
    table = pd.DataFrame([{"PM": _short(c["policy"]), "RM": _short(c["reward"]), "proxy": common.num(c["proxy"]),
                           "real (win rate)": common.num(c["real"]),
                           "real measured by": by[(c["policy"], c["reward"])].measured_by,
                           "proxy rank": c["proxy_rank"],
                           "real rank": c["real_rank"], "real − proxy rank": c["shift"]} for c in res.cells])
    st.dataframe(table, hide_index=True, key="rl_proxy_table")
    if res.disagreements:
        worst = res.disagreements[0]
        st.warning(f"{len(res.disagreements)} cell(s) ranked differently; largest: "
                   f"{common.md(_short(worst['policy']))} × {common.md(_short(worst['reward']))} — proxy rank "
                   f"{worst['proxy_rank']:g}, real rank {worst['real_rank']:g}.")
    else:
        st.success("The proxy orders these cells exactly as the real runs do.")
