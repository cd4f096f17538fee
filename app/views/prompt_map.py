"""Prompt map: where in prompt space the PM and RM stop getting along.

Why: SEAM problems cluster by topic (an RM that was never trained on code, a PM that writes lists where
the RM wants prose). The map shows the cached UMAP of prompt embeddings (table prompt_map) coloured by
SEAM, hack rate or RM-prefers-worse; a lasso or box selection is sent to the mismatch browser or to the
export page. Large DBs are downsampled in SQL (reservoir sample), with n shown.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.queries.base import filter_options, table_counts
from analysis.queries.prompt_map import prompt_clusters, prompt_map_points
from app import common

st.title("Prompt map")
common.require_db()
opts = common.run(filter_options)
counts = common.run(table_counts)
n_map = int(dict(zip(counts["table"], counts["rows"])).get("prompt_map", 0))
if n_map == 0:
    st.info("No prompt map in this DB yet. The precompute's embedding step writes prompt_embeddings and the 2-D UMAP "
            "coordinates in prompt_map (e.g. `seam precompute ... --map`; see the README); reload afterwards.")
    st.stop()

c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 2, 2])
variant = common.pick("variant", opts["variants"], "m_variant", container=c1)
policy = common.pick("policy model", opts["policies"], "m_pm", container=c2, models=True)
reward = common.pick("reward model", opts["rewards"], "m_rm", container=c3, models=True)
color = c4.selectbox("colour by", ["topic", "seam", "hack_rate", "mismatch", "source", "dataset"], key="m_color",
                     bind="query-params", help="topic: k-means clusters of the prompts, labelled by their top terms")
max_pts = c5.select_slider("max points", [2000, 5000, 10000, 20000, 50000], value=20000, key="m_max",
                           bind="query-params")
pts, n_total = common.run(prompt_map_points, variant=variant, policy=policy, reward=reward, max_points=max_pts,
                            seed=0)
shown = len(pts)
st.caption(f"{shown:,} of {n_total:,} prompts shown" + (" (reservoir sample in SQL)" if shown < n_total else "")
           + f"; metrics for {common.md(variant)}, {common.md(policy)} × {common.md(reward)}. "
           "Lasso or box-select points to open them in the browser or send them to export.")

hover = [common.plot_text(p) for p in pts["prompt"]]
k_topics = st.slider("topics (k-means clusters)", 2, 30, 8, key="m_k", bind="query-params")
assign, clusters, basis = common.run(prompt_clusters, k=k_topics, variant=variant, policy=policy, reward=reward,
                                     max_points=max_pts, seed=0)
if not assign.empty:
    pts = pts.merge(assign, on="sample_id", how="left")
fig = go.Figure()
if color == "topic" and not clusters.empty:
    terms = dict(zip(clusters["cluster"], clusters["terms"]))
    for cat, g in pts.groupby("cluster", sort=True, dropna=False):
        fig.add_trace(go.Scattergl(x=g["x"], y=g["y"], mode="markers",
                                   name=common.plot_text(f"{int(cat)}: {terms.get(cat, '')}"),
                                   customdata=g["sample_id"], text=[hover[i] for i in g.index],
                                   marker=dict(size=5, opacity=0.7), hovertemplate="%{text}<extra></extra>"))
    for c in clusters.itertuples():
        fig.add_annotation(x=c.x, y=c.y, text=common.plot_text(c.terms), showarrow=False,
                           font=dict(size=11), bgcolor="rgba(255,255,255,0.75)")
elif color in ("source", "dataset"):
    for cat, g in pts.groupby(color, sort=True, dropna=False):
        fig.add_trace(go.Scattergl(x=g["x"], y=g["y"], mode="markers", name=common.plot_text(cat),
                                   customdata=g["sample_id"], text=[hover[i] for i in g.index],
                                   marker=dict(size=5, opacity=0.7),
                                   hovertemplate="%{text}<extra></extra>"))
else:
    vals = pts[color].astype(float)
    fig.add_trace(go.Scattergl(
        x=pts["x"], y=pts["y"], mode="markers", customdata=pts["sample_id"], text=hover,
        marker=dict(size=5, opacity=0.75, color=vals, colorscale="Plasma" if color != "mismatch" else
                    [[0, "#9ecae1"], [1, "#d62728"]], colorbar=dict(title=color), showscale=True),
        hovertemplate="%{text}<br>" + color + " %{marker.color:.3g}<extra></extra>", showlegend=False))
fig.update_layout(height=620, margin=dict(t=10), dragmode="lasso", xaxis=dict(showticklabels=False, title="UMAP 1"),
                  yaxis=dict(showticklabels=False, title="UMAP 2"))
event = st.plotly_chart(fig, key="map", on_select="rerun", selection_mode=("lasso", "box", "points"))

# ------------------------------------------------------------------ topics
if not clusters.empty:
    st.subheader("Topics: where the RM fails")
    st.caption(f"k-means on the prompt {common.md(basis)} (k = {k_topics}), each cluster labelled by its "
               "c-TF-IDF top terms; mismatch = the RM prefers some worse response over gold (Wilson 95%); "
               "mean SEAM with a t 95% interval. Click a topic to select its prompts.")
    tv = st.dataframe(pd.DataFrame({
        "topic": clusters["cluster"], "top terms": clusters["terms"], "prompts": clusters["n"],
        "mismatch [95% CI]": [common.ci_pct(p, lo, hi) for p, lo, hi in
                              zip(clusters["mismatch"], clusters["mismatch_lo"], clusters["mismatch_hi"])],
        "mean SEAM [95% CI]": [common.ci_num(m, lo, hi) for m, lo, hi in
                               zip(clusters["mean_seam"], clusters["lo"], clusters["hi"])],
    }).sort_values("topic"), hide_index=True, key="topics", on_select="rerun", selection_mode="single-row")
    topic_rows = tv.selection.rows if tv and tv.selection else []
else:
    topic_rows = []

points = (event or {}).get("selection", {}).get("points", []) if event else []
ids = sorted({p.get("customdata") for p in points if p.get("customdata")})
if not ids and topic_rows:
    topic = clusters["cluster"].iloc[topic_rows[0]]
    ids = sorted(pts.loc[pts["cluster"] == topic, "sample_id"])
# the selection goes into the URL (`m_sel`, up to URL_MAX_IDS ids), so a shared link shows the same prompts
URL_MAX_IDS = 400
if ids:
    st.session_state["map_selected"] = True
    want = ",".join(ids) if len(ids) <= URL_MAX_IDS else None
    if want and st.query_params.get("m_sel") != want:
        st.query_params["m_sel"] = want
    elif not want and "m_sel" in st.query_params:
        del st.query_params["m_sel"]
elif st.session_state.get("map_selected"):  # the user cleared the selection on the chart
    st.session_state["map_selected"] = False
    if "m_sel" in st.query_params:
        del st.query_params["m_sel"]
elif st.query_params.get("m_sel"):
    on_map = set(pts["sample_id"])
    ids = sorted(i for i in st.query_params["m_sel"].split(",") if i in on_map)
    if ids:
        st.caption(f"Selection from the link: {len(ids):,} prompts.")
if not ids:
    st.caption("Nothing selected yet.")
    st.stop()

sel = pts[pts["sample_id"].isin(ids)]
all_mean, sel_mean = pts["seam"].mean(), sel["seam"].mean()
m1, m2, m3 = st.columns(3)
m1.metric("selected prompts", f"{len(ids):,}")
m2.metric("mean SEAM, selection", common.num(sel_mean),
          delta=None if sel["seam"].isna().all() else ("+" if sel_mean >= all_mean else "") + f"{common.num(sel_mean - all_mean)} vs shown", delta_color="inverse")
m3.metric("RM prefers worse, selection", common.pct(sel["mismatch"].astype(float).mean()))
st.dataframe(sel[["sample_id", "seam", "hack_rate", "mismatch", "dataset", "source", "prompt"]], hide_index=True,
             key="sel_table")

origin = f"prompt map ({variant}, {policy} × {reward})"
a, b = st.columns(2)
if a.button("Open selection in the mismatch browser", key="to_browser", icon=":material/search:"):
    st.session_state["selection"] = {"ids": ids, "origin": origin}
    st.switch_page("views/browser.py", query_params={"b_variant": [variant], "b_pm": [policy], "b_rm": [reward],
                                                     "b_only": "false"})
if b.button("Send selection to export", key="to_export", icon=":material/filter_alt:"):
    st.session_state["selection"] = {"ids": ids, "origin": origin}
    st.switch_page("views/export.py", query_params={"e_variant": variant, "e_pm": policy, "e_rm": reward})
