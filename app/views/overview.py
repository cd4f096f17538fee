"""Overview: what the results DB holds and the headline numbers, each with n and a 95% interval.

Why these headlines: RM accuracy on dataset pairs is the number everyone already knows (sanity check
that the RM is the one you think); the mismatch rate on PM-generated pairs is the paper's 35% and only
exists where people labeled pairs; mean SEAM per (PM, RM, variant) is what the rest of the app
drills into.
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.storage import labels as labels_mod
from analysis.queries.base import experiment_table, filter_options, table_counts
from analysis.queries.distributions import seam_summary
from analysis.queries.selection import Selection
from analysis.queries.overview import (datasets_summary, models_summary, not_selected, recent_runs, reject_reasons,
                                       rm_accuracy, variant_summary)
from analysis.queries.spotcheck import label_mismatch
from app import common

st.title("SEAM Lens — overview")
stat = common.require_db()

counts = common.run(table_counts)
opts = common.run(filter_options)
c = dict(zip(counts["table"], counts["rows"]))
unsel = common.run(not_selected)
cols = st.columns(7)
cols[0].metric("samples", f"{c.get('samples', 0):,}")
cols[1].metric("responses", f"{c.get('responses', 0):,}")
cols[2].metric("policy models", len(opts["policies"]))
cols[3].metric("reward models", len(opts["rewards"]))
cols[4].metric("worse variants", len(opts["variants"]))
cols[5].metric("malformed input rows", f"{c.get('rejects', 0):,}",
               help="Rows the ingest could not use (bad JSON, missing fields, …), by reason below.")
cols[6].metric("not selected", f"{int(unsel['n'].sum()):,}" + ("+" if unsel["limit_reached"].any() else ""),
               help="Input rows left out on purpose by --fraction / --limit; not errors. '+': the ingest "
                    "stopped at --limit and did not read the rest of the input.")

# ------------------------------------------------------------------ last run
runs = common.run(recent_runs, 5)
if not runs.empty:
    last = runs.iloc[0]
    box = {"done": st.success, "running": st.info, "failed": st.error,
           "interrupted": st.warning}.get(str(last["status"]), st.info)
    box(f"Last run: {common.md(last['command'])} — status **{common.md(last['status'])}**, started "
        f"{common.md(last['started_at'])}, finished "
        f"{common.md(last['finished_at']) if pd.notna(last['finished_at']) else '—'}"
        + (" (killed before it finished; rerun the same command to resume)"
           if last["status"] == "interrupted" else ""))

# ------------------------------------------------------------------ headline: RM accuracy
st.header("RM accuracy on dataset pairs")
st.caption("Gold (reference) response vs each worse response of a variant; `rejected` = the dataset's own "
           "human pairs, i.e. classic RM accuracy. Ties count in n but neither right nor wrong. "
           "95% Wilson intervals.")
with st.spinner("Counting RM accuracy over every dataset pair (once per DB version)…"):
    acc = common.run(rm_accuracy)
if acc.empty:
    st.info("No RM scores yet.")
else:
    show = pd.DataFrame({
        "RM": acc["reward"], "variant": acc["variant"], "n": acc["n"], "correct": acc["correct"],
        "wrong": acc["wrong"], "ties": acc["ties"],
        "accuracy [95% CI]": [common.ci_pct(p, lo, hi) for p, lo, hi in
                              zip(acc["accuracy"], acc["accuracy_lo"], acc["accuracy_hi"])],
    })
    left, right = st.columns([3, 2])
    common.table(show, "acc_table", container=left)
    fig = go.Figure()
    for variant, g in acc.groupby("variant", sort=True):
        fig.add_bar(name=common.plot_text(variant), x=[common.plot_text(r) for r in g["reward"]], y=g["accuracy"],
                    error_y=dict(type="data", symmetric=False, array=g["accuracy_hi"] - g["accuracy"],
                                 arrayminus=g["accuracy"] - g["accuracy_lo"]),
                    customdata=g["n"], hovertemplate="accuracy %{y:.1%}<br>n=%{customdata}<extra></extra>")
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1], height=300,
                      margin=dict(t=10, b=10), legend_title_text="variant")
    right.plotly_chart(fig, key="acc_chart")

# ------------------------------------------------------------------ headline: mismatch on PM pairs
st.header("Mismatch rate vs hand labels")
st.caption("Share of hand-labeled pairs where the RM scores the response people preferred strictly lower. "
           "`policy` = two samples of the PM for one prompt (the paper's 35% is about these); `dataset` = "
           "gold vs a worse response. One consensus label per pair; label ties are excluded from n.")
lab = common.labels_df()
cons = labels_mod.consensus(lab, common.label_store().finals())
mm = common.run(label_mismatch, cons) if not cons.empty else pd.DataFrame()
if mm.empty:
    st.info("No hand labels yet. Label pairs blind on the **Spot-check** page; the rate and its interval appear here.")
else:
    st.dataframe(pd.DataFrame({
        "pairs": mm["kind"], "RM": mm["reward"], "n": mm["n"], "RM wrong": mm["wrong"], "RM ties": mm["rm_ties"],
        "label ties": mm["label_ties"],
        "mismatch [95% CI]": [common.ci_pct(p, lo, hi) for p, lo, hi in
                              zip(mm["mismatch"], mm["mismatch_lo"], mm["mismatch_hi"])],
    }), hide_index=True, key="mm_table")
    st.caption(f"{len(lab)} labels from {lab['annotator'].nunique()} annotator(s); "
               f"{cons.attrs.get('n_split', 0)} pair(s) without consensus.")
exp_mm = common.run(experiment_table, "mismatch_rates")
if not exp_mm.empty:
    st.markdown("**Against an automatic reference** (`seam experiment`: a gold judge or the dataset's labels)")
    st.caption("pm_samples = two PM samples of one prompt; rate = RM disagrees with the reference, over pairs "
               "with a strict RM preference (n); Wilson 95%.")
    show_mm = exp_mm.copy()
    if {"rate", "lo", "hi"} <= set(show_mm.columns):
        show_mm.insert(0, "mismatch [95% CI]", [common.ci_pct(p, lo, hi) for p, lo, hi in
                                                zip(show_mm["rate"], show_mm["lo"], show_mm["hi"])])
    keep = [c for c in ("mismatch [95% CI]", "pair_kind", "policy", "reward", "reference", "k", "n", "ties",
                        "reference_ties") if c in show_mm.columns]
    common.table(show_mm[keep], "exp_mismatch")

# ------------------------------------------------------------------ headline: mean SEAM
st.header("Mean SEAM per PM × RM × variant")
st.caption("SEAM(x) = (1/k) Σ_j exp(l_α(y_j)) · 1[r(y_j) > r(y*)] at α = 1 (mean token log-prob), hard "
           "hacking; higher = less seamless. Mean over samples with a Student-t 95% interval.")
summ = common.run(seam_summary, Selection())
common.table(pd.DataFrame({
    "PM": summ["policy"], "RM": summ["reward"], "variant": summ["variant"], "n": summ["n"],
    "mean SEAM [95% CI]": [common.ci_num(m, lo, hi) for m, lo, hi in zip(summ["mean"], summ["lo"], summ["hi"])],
    "median": summ["median"].map(common.num), "hack rate": summ["hack_rate"].map(common.pct),
    "RM prefers gold": summ["rm_prefers_gold"].map(common.pct),
    "PM prefers gold": summ["pm_prefers_gold"].map(common.pct),
}), "seam_table", max_rows=40)

# ------------------------------------------------------------------ contents
st.header("What the DB holds")
a, b = st.columns(2)
a.subheader("Datasets")
a.dataframe(common.run(datasets_summary), hide_index=True, key="ds_table")
b.subheader("Models")
models = common.run(models_summary)
models["sha256"] = models["sha256"].str.slice(0, 12)
b.dataframe(models, hide_index=True, key="models_table")
a.subheader("Response variants")
a.dataframe(common.run(variant_summary), hide_index=True, key="variants_table")
b.subheader("Malformed input rows by reason")
rej = common.run(reject_reasons)
if rej.empty:
    b.caption("None.")
else:
    b.dataframe(rej, hide_index=True, key="rejects_table")
st.subheader("Recent runs")
if runs.empty:
    st.caption("No runs recorded.")
else:
    st.dataframe(runs, hide_index=True, key="runs_table")
    with st.expander("Summary of the last run"):
        try:
            st.json(json.loads(runs.iloc[0]["summary"] or "{}"))
        except (TypeError, ValueError):
            st.text(str(runs.iloc[0]["summary"]))
with st.expander("Table sizes"):
    st.dataframe(counts, hide_index=True, key="counts_table")
