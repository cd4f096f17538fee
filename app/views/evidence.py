"""Evidence: the pre-registered study of SEAM against human labels (`seam experiment --human`).

Why a page of its own: the other pages describe a DB; this one answers whether SEAM can be trusted, so
it shows the design as registered before the run, the primary endpoint per (PM, RM) cell with intervals,
the controls, acquisition and selection, and the verdict generated from those numbers. A proxy-judge run
is labelled as such everywhere on the page and is never presented as the headline.
"""

from __future__ import annotations

import json

import plotly.express as px
import streamlit as st

from analysis.queries import evidence as q
from app import common

st.title("Evidence")
v = common.run(q.verdict)
if not v:
    st.info("No pre-registered study in this DB yet. Run `seam experiment --human DATASET` (or `--human proxy` "
            "without human labels; `--quick` for a small run) with `--db` pointing here, then reload.")
    st.stop()

proxy = v["mode"] != "human"
tag = " (proxy judge)" if proxy else ""
if proxy:
    st.warning("**Proxy judge**: these results use synthetic rejected answers, not human labels. They test the "
               "pipeline, not SEAM; they are not the headline.")
st.subheader("Verdict" + tag)
st.markdown(common.md(v["verdict"]))
st.caption(f"run {common.md(v['run_id'])}; pre-registration written {common.md(v['written_at'])}")

design = v["design"]
with st.expander("Pre-registration" + tag, expanded=False):
    st.json({k: val for k, val in design.items() if k != "config"})
    st.caption("Full configuration:")
    st.code(json.dumps(design.get("config", {}), indent=2), language="json")

st.subheader("Power (computed before the run)" + tag)
st.dataframe(common.run(q.power), hide_index=True)

st.subheader("Primary endpoint: AUROC of SEAM for 'RM prefers the human-rejected answer'" + tag)
st.caption("Per (PM, RM size) cell, never pooled; mean over the cell's seeds; 95% percentile bootstrap over "
           "prompts; p Holm-corrected; 'equivalent' = TOST inside 0.5 ± margin. The pre-registered primary "
           "rows come first.")
st.dataframe(common.run(q.primary_endpoint), hide_index=True)

st.subheader("Controls" + tag)
st.caption("Negative: SEAM with the PM's log-probs permuted. Positive (the gate): an RM broken on purpose on one "
           "topic cluster (its unplanted twin everywhere else; on the cluster an expert trained to prefer the worse "
           "answers in proportion to the PM's weight on them); SEAM must flag that cluster more than it does for "
           "the twin: AUROC plant minus twin, paired by seed, lower 95% end > 0. If it fails, the run claims "
           "nothing. The 'reference' rows (the plant's and twin's own AUROCs, the v2 plant that breaks every worse "
           "answer alike, the v1 plant, PM term alone, ceiling, within-item rise) explain the result; they are "
           "not tests.")
st.dataframe(common.run(q.controls), hide_index=True)

st.subheader("Added value over |Δr| and RM-ensemble disagreement" + tag)
st.dataframe(common.run(q.secondary), hide_index=True)

st.subheader("Acquisition and selection" + tag)
st.caption("RM accuracy on C per arm; interval: bootstrap over seeds and items; delta against the random arm.")
st.dataframe(common.run(q.retrain), hide_index=True)

sat = common.run(q.saturation)
if not sat.empty:
    top_n = int(sat["bon_n"].max())
    st.subheader(f"Saturation: best-of-N up to N = {top_n}" + tag)
    st.caption("Each PM samples N answers per C prompt; every RM of the grid picks its best of n; y = the judge's "
               "score of the pick (expected over all n-subsets, mean over the size's seeds, 95% bootstrap over "
               "prompts). Judge: RMs trained on B (held out from the grid); no human labels exist for generated "
               "answers. 'Saturated' only by TOST: the 90% interval inside ± margin (judge-score SD units).")
    sat = sat.assign(rm=sat["rm_size"].map(lambda s: f"rm-{s}"), err=sat["hi"] - sat["quality"],
                     err_minus=sat["quality"] - sat["lo"], policy=sat["policy"].str.rsplit("/", n=1).str[-1])
    fig = px.line(sat, x="bon_n", y="quality", color="rm", facet_col="policy", markers=True, log_x=True,
                  error_y="err", error_y_minus="err_minus", hover_data=["n", "n_seeds", "lo", "hi", "gain"],
                  labels={"bon_n": "N (log2 axis)", "quality": "judge score of the pick", "rm": "RM size"})
    fig.update_xaxes(tickvals=sorted(sat["bon_n"].unique()))
    st.plotly_chart(fig, key="saturation")
    st.dataframe(common.run(q.saturation_tests), hide_index=True)

st.subheader("RM grid" + tag)
st.dataframe(common.run(q.rm_grid), hide_index=True)
