"""SEAM distributions per variant and model pair, under any SEAM definition (alpha, hard / soft tau).

Why everything is aggregated in DuckDB: at 1M samples x variants x model pairs there are tens of
millions of per-sample values; the page asks for histogram bins, quantiles (ECDF / box), a ≤ 20k
reservoir sample for violins and a ≤ 50k sample for correlations — each with its n on screen — in one
call (`analysis.queries.distributions.seam_report`), so a non-default definition is evaluated once per change, not
once per chart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.queries.base import filter_options
from analysis.queries.distributions import seam_report
from analysis.queries.selection import NONDEFAULT_MAX_SAMPLES, Selection
from app import common

st.title("SEAM distributions")
stat = common.require_db()
opts = common.run(filter_options)

with st.sidebar:
    st.subheader("Definition")
    alpha, tau = common.seam_definition(key_prefix="d_")
    metric = common.pick("metric", ["seam", "seam_rel", "hack_rate"], "d_metric",
                         help="seam = (1/k) Σ w·h; seam_rel = Σ w·h / Σ w; hack_rate = (1/k) Σ h")

c1, c2, c3, c4 = st.columns([3, 2, 2, 3])
variants = common.pick_many("variants", opts["variants"], "d_variant", container=c1)
pms = common.pick_many("policy models", opts["policies"], "d_pm", default=opts["policies"][:1], container=c2, models=True)
rms = common.pick_many("reward models", opts["rewards"], "d_rm", default=opts["rewards"][:1], container=c3, models=True)
kind = c4.segmented_control("plot", ["histogram", "ECDF", "box", "violin"], default="histogram", key="d_plot",
                            bind="query-params", required=True)
if not (variants and pms and rms):
    st.info("Pick at least one variant, policy model and reward model.")
    st.stop()
t1, t2, t3, t4, t5, t6 = st.columns([2, 2, 2, 2, 3, 2])
nonzero = t1.toggle("hide exact zeros", value=True, key="d_nz", bind="query-params",
                    help="Samples where the RM never prefers a worse response have SEAM exactly 0; their share is "
                         "listed under the histogram.")
norm = t2.toggle("share per group", value=True, key="d_norm", bind="query-params")
pm1 = t3.selectbox("PM (correlation, length)", pms, key="d_cpm", bind="query-params")
rm1 = t4.selectbox("RM (correlation, length)", rms, key="d_crm", bind="query-params")
log_axis = t6.toggle("log scale", value=False, key="d_log", bind="query-params",
                     help="Log value axis: at small alpha SEAM values are ~1e-7 and a linear axis puts every bar at 0. "
                          "The histogram then uses log-spaced bins over the values above 0.")
length = t5.radio("length of", ["mean_tokens", "gold_tokens"], horizontal=True, key="d_len", bind="query-params",
                  format_func=lambda s: {"mean_tokens": "worse responses", "gold_tokens": "gold response"}[s])

# off the precomputed grid of SEAM definitions the page computes from the per-response scores: say so,
# and stop it after a time bound rather than hang
sel = Selection(alpha=alpha, tau=tau, metric=metric, variants=variants, policies=pms, rewards=rms)
custom = not sel.on_grid
with st.spinner("Computing this custom SEAM definition from the per-response scores…" if custom
                else "Aggregating in DuckDB…"):
    try:
        rep = common.run(seam_report, sel, plot=kind, bins=40, nonzero_only=nonzero, log_bins=log_axis, n_q=101, sample_rows=20_000,
                         corr_policy=pm1, corr_reward=rm1, length=length, length_bins=15,
                         _limit_s=common.CUSTOM_QUERY_LIMIT_S if custom else None)
    except common.QueryTimeout as exc:
        st.warning(str(exc))
        st.stop()
summ = rep["summary"]
default_def = alpha == 1.0 and tau == 0.0
sampled = stat["samples"] > NONDEFAULT_MAX_SAMPLES
st.caption(f"{common.md(metric)} at alpha = {alpha:g}, "
           + (f"soft hacking, tau = {tau:g}" if tau > 0 else "hard hacking") + ". Mean with Student-t 95% interval."
           + (f" Charts{'' if default_def else ' and summary'} use a fixed hash sample of ~{NONDEFAULT_MAX_SAMPLES:,}"
              f" of the {stat['samples']:,} samples (n below)"
              + (", recomputed now from the per-response scores (a custom definition)." if custom
                 else ", precomputed at finalize.") if sampled else ""))
common.table(pd.DataFrame({
    "variant": summ["variant"], "PM": summ["policy"], "RM": summ["reward"], "n": summ["n"],
    "mean [95% CI]": [common.ci_num(m, lo, hi) for m, lo, hi in zip(summ["mean"], summ["lo"], summ["hi"])],
    "median": summ["median"].map(common.num), "hack rate": summ["hack_rate"].map(common.pct),
}), "summary")


def group_name(row) -> str:
    name = row["variant"]
    if len(pms) > 1 or len(rms) > 1:
        name += f" | {row['policy']} × {row['reward']}"
    return common.plot_text(name)


data = rep["plot"]
fig = go.Figure()
if data.empty:
    st.info("No values for this selection.")
elif kind == "histogram":
    for _, g in data.groupby(["variant", "policy", "reward"], sort=True):
        denom = (g["group_n"] - (g["zeros"] if nonzero or log_axis else 0)).iloc[0]  # log bins: zeros left out
        y = g["count"] / denom if norm and denom else g["count"]
        fig.add_bar(x=(g["bin_lo"] + g["bin_hi"]) / 2, y=y, width=(g["bin_hi"] - g["bin_lo"]),
                    name=group_name(g.iloc[0]), opacity=0.6,
                    customdata=g["count"], hovertemplate="%{x:.3g}: %{customdata} samples<extra></extra>")
    fig.update_layout(barmode="overlay", yaxis_title="share" if norm else "samples", xaxis_title=metric)
    zs = data.drop_duplicates(["variant", "policy", "reward"])
    st.caption("Bins computed in DuckDB. Exact zeros per group: " + "; ".join(
        f"{common.md(r.variant)} {common.md(r.policy)}×{common.md(r.reward)}: {common.pct(r.zeros / r.group_n)} of "
        f"n={r.group_n:,}" for r in zs.itertuples()))
elif kind in ("ECDF", "box"):
    means = summ.set_index(["variant", "policy", "reward"])["mean"]
    for key, g in data.groupby(["variant", "policy", "reward"], sort=True):
        name = group_name(g.iloc[0]) + f" (n={int(g['n'].iloc[0]):,})"
        if kind == "ECDF":
            fig.add_scatter(x=g["value"], y=g["q"], mode="lines", name=name, line_shape="hv")
        else:
            qv = dict(zip(g["q"].round(2), g["value"]))
            fig.add_trace(go.Box(name=name, q1=[qv[0.25]], median=[qv[0.5]], q3=[qv[0.75]], lowerfence=[qv[0.05]],
                                 upperfence=[qv[0.95]], mean=[float(means.get(key, np.nan))], boxmean=True,
                                 boxpoints=False))
    if kind == "ECDF":
        fig.update_layout(xaxis_title=metric, yaxis_title="share of samples ≤ x", yaxis_tickformat=".0%")
        st.caption("ECDF from 101 exact quantiles per group, computed in DuckDB.")
    else:
        fig.update_layout(yaxis_title=metric, showlegend=False)
        st.caption("Boxes from exact quantiles: whiskers at the 5th and 95th percentiles, dashed line = mean.")
else:
    for _, g in data.groupby(["variant", "policy", "reward"], sort=True):
        name = group_name(g.iloc[0]) + f" (n={len(g):,})"
        fig.add_trace(go.Violin(y=g["value"], name=name, box_visible=True, meanline_visible=True, points=False))
    fig.update_layout(yaxis_title=metric, showlegend=False)
    st.caption(f"Violins drawn from a reservoir sample of {len(data):,} values (SQL `USING SAMPLE`).")
fig.update_layout(height=420, margin=dict(t=20), legend=dict(orientation="h", y=-0.2))
if log_axis:  # the value axis: x for histogram / ECDF, y for box / violin (zeros drop off a log axis)
    fig.update_layout(**({"xaxis_type": "log"} if kind in ("histogram", "ECDF") else {"yaxis_type": "log"}))
st.plotly_chart(fig, key="dist")

# ------------------------------------------------------------------ correlation between variants
st.subheader("Do the variants agree? (Spearman between per-sample values)")
corr, n_corr = rep["corr"], rep["corr_n"]
if corr.empty:
    st.caption("Needs at least two variants for this model pair.")
else:
    lbl = [common.plot_text(v) for v in corr.columns]
    cf = go.Figure(go.Heatmap(z=corr.values, x=lbl, y=lbl, zmin=-1, zmax=1, colorscale="RdBu",
                              text=np.round(corr.values, 2), texttemplate="%{text}"))
    cf.update_layout(height=320, margin=dict(t=10), yaxis_autorange="reversed")
    a2, b2 = st.columns([1, 1])
    a2.plotly_chart(cf, key="corr")
    b2.caption(f"{common.md(pm1)} × {common.md(rm1)}: Spearman ρ on a SQL reservoir sample of n = {n_corr:,} "
               "samples (pairwise complete).")
    b2.dataframe(corr.round(3), key="corr_table")

# ------------------------------------------------------------------ SEAM vs length
st.subheader(f"{common.md(metric)} vs response length")
bl = rep["by_length"]
lf = go.Figure()
for v, g in bl.groupby("variant", sort=True):
    mid = (g["len_lo"] + g["len_hi"]) / 2
    lf.add_scatter(x=mid, y=g["mean"], mode="lines+markers", name=common.plot_text(v), customdata=g["n"],
                   error_y=dict(type="data", symmetric=False, array=(g["hi"] - g["mean"]).fillna(0),
                                arrayminus=(g["mean"] - g["lo"]).fillna(0)),
                   hovertemplate="tokens ≈ %{x:.0f}<br>mean %{y:.3g}<br>n=%{customdata}<extra></extra>")
lf.update_layout(xaxis_title=("mean PM tokens of the worse responses" if length == "mean_tokens"
                              else "PM tokens of the gold response") + " (bin centre; bins up to the 99th percentile)",
                 yaxis_title=f"mean {metric}", height=360, margin=dict(t=10))
st.plotly_chart(lf, key="length")
st.caption(f"{common.md(pm1)} × {common.md(rm1)}; t 95% intervals; n per bin in the hover.")
