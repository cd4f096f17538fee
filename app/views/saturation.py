"""Saturation: RLHF quality over the PM x RM grid, and how it depends on each model's own quality.

Why several sources: the real figure is the user's own RLHF runs (`seam import-rlhf runs.csv`, table
rlhf_results); an experiments job may add a best-of-N grid (relation `saturation_grid`); when neither
exists, the page still shows a proxy computed from the base tables, labelled as such, and says what to
run. Nothing here may fail because a relation is missing.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.queries.base import experiment_table, filter_options
from analysis.queries.browser import BrowseFilter, browse_count, browse_page
from analysis.queries.saturation import axis_quality, proxy_grid, rlhf_grid, saturation_grid
from app import common

st.title("Saturation: PM × RM")
common.require_db()
opts = common.run(filter_options)

rlhf = common.run(rlhf_grid)
satg = common.run(saturation_grid)
sources = []
if not rlhf.empty:
    sources.append("imported RLHF results")
if not satg.empty:
    sources.append("saturation_grid (best-of-N)")
sources.append("proxy from scores")

c1, c2, c3 = st.columns([2, 1, 1])
source = c1.radio("Cell value", sources, horizontal=True, key="s_src", bind="query-params",
                  help="Imported results come from `seam import-rlhf FILE.csv` (pm,rm,score); the best-of-N grid from "
                       "`seam experiment`. The proxy needs no extra run.")
variant = common.pick("worse variant (proxy, axis quality, drill-down)", opts["variants"], "s_variant",
                      default="rejected" if "rejected" in opts["variants"] else None, container=c2)
beta = 1.0
if source == "proxy from scores":
    beta = c3.select_slider("β (proxy KL coefficient)", [0.1, 0.25, 0.5, 1.0, 2.0, 4.0], value=1.0, key="s_beta",
                            bind="query-params",
                            help="π_RL(y) ∝ π(y)·exp(r(y)/β): small β trusts the RM, large β stays near the PM.")
display = {}  # model reference -> label shown (from seam experiment, when present)
rank = {}     # model reference -> place on its axis

if source == "imported RLHF results":
    src_names = sorted(rlhf["source"].unique())
    src_pick = st.selectbox("import source", src_names, key="rlhf_source") if len(src_names) > 1 else src_names[0]
    g = rlhf[rlhf["source"] == src_pick]
    grid = pd.DataFrame({"policy": g["policy"], "reward": g["reward"], "quality": g["score"],
                         "lo": float("nan"), "hi": float("nan"), "n": g["n"]})
    metric_name = f"RLHF score (imported, source {src_pick!s})"
    st.caption("Scores as imported; no interval is available for a single run per cell (n = runs averaged).")
elif source.startswith("saturation_grid"):
    metrics = sorted(satg["metric"].unique())
    m = st.selectbox("metric", metrics, key="sat_metric") if len(metrics) > 1 else metrics[0]
    g = satg[satg["metric"] == m]
    values = {"quality": ("quality", "quality_lo", "quality_hi")}
    if {"gain", "gain_lo", "gain_hi"} <= set(g.columns):
        values["gain over N = 1"] = ("gain", "gain_lo", "gain_hi")
    if {"win_rate", "win_lo", "win_hi"} <= set(g.columns):
        values["win rate"] = ("win_rate", "win_lo", "win_hi")
    val = st.segmented_control("value", list(values), default="quality", key="s_val", bind="query-params",
                               required=True)
    v, vlo, vhi = values[val]
    grid = pd.DataFrame({"policy": g["policy"], "reward": g["reward"], "quality": g[v],
                         "lo": g[vlo], "hi": g[vhi], "n": g["n"]})
    for side in ("policy", "reward"):
        if f"{side}_label" in g:
            display.update(dict(zip(g[side], g[f"{side}_label"].fillna(g[side]))))
        if f"{side}_rank" in g:
            rank.update(dict(zip(g[side], g[f"{side}_rank"])))
    bon = f", best-of-{int(g['bon_n'].iloc[0])}" if "bon_n" in g and pd.notna(g["bon_n"].iloc[0]) else ""
    metric_name = f"{m} ({val}{bon}; seam experiment)"
else:
    with st.spinner("Computing the proxy from the scores…"):
        grid = common.run(proxy_grid, variant=variant, alpha=1.0, beta=float(beta))
    grid = grid.rename(columns={"quality": "quality"})[["policy", "reward", "quality", "lo", "hi", "n"]]
    metric_name = f"proxy: P(gold) under π·exp(r/β), gold + {variant}"
    st.info("Showing the **built-in proxy**: for each sample, the KL-regularised RLHF optimum restricted to the "
            "gold answer and its worse responses, π_RL(y) ∝ π(y)·exp(r(y)/β); the cell is the mean probability it "
            "puts on gold (t 95% interval). It needs no extra run but is not an RLHF result: import your own runs "
            "with `seam import-rlhf runs.csv` (columns pm, rm, score) to see real saturation.")

from app.views import rlhf_panel  # the real RLHF grid (seam rlhf-grid) and proxy vs real
rlhf_panel.render(variant)

if grid.empty:
    st.warning("No grid values for this choice.")
    st.stop()

# model order: axis rank when the experiment recorded one, else registration order (by convention weakest
# to strongest, as given on the CLI)
def order(models: set, registered: list) -> list:
    if rank and all(m in rank for m in models):
        return sorted(models, key=lambda m: (rank[m], m))
    return [m for m in registered if m in models] + sorted(models - set(registered))


pm_order = order(set(grid["policy"]), opts["policies"])
rm_order = order(set(grid["reward"]), opts["rewards"])


def name(m: str) -> str:
    return str(display.get(m, m))
z = grid.pivot_table(index="policy", columns="reward", values="quality").reindex(index=pm_order, columns=rm_order)
nmat = grid.pivot_table(index="policy", columns="reward", values="n").reindex(index=pm_order, columns=rm_order)

st.subheader("Grid")
st.caption(f"{common.md(metric_name)} — click a cell to see the samples behind it.")
xs = [common.plot_text(name(r)) for r in rm_order]
ys = [common.plot_text(name(p)) for p in pm_order]
text = [[("" if pd.isna(z.iloc[i, j]) else f"{common.num(z.iloc[i, j])}<br>n={int(nmat.iloc[i, j])}")
         for j in range(len(rm_order))] for i in range(len(pm_order))]
fig = go.Figure(go.Heatmap(z=z.values, x=xs, y=ys, text=text, texttemplate="%{text}", colorscale="Viridis",
                           colorbar_title="quality", hoverinfo="skip"))
# invisible markers on cell centres make cells clickable (heatmaps emit no selection events)
cx, cy, cd = [], [], []
for i, p in enumerate(pm_order):
    for j, r in enumerate(rm_order):
        cx.append(xs[j]); cy.append(ys[i]); cd.append([p, r])
fig.add_trace(go.Scatter(x=cx, y=cy, mode="markers", customdata=cd, showlegend=False,
                         marker=dict(size=60, symbol="square", opacity=0.01, color="white"),
                         hovertemplate="PM %{y}<br>RM %{x}<extra></extra>"))
fig.update_layout(xaxis_title="reward model", yaxis_title="policy model", height=140 + 70 * len(pm_order),
                  margin=dict(t=10), clickmode="event+select", dragmode=False)
event = st.plotly_chart(fig, key="grid", on_select="rerun", selection_mode="points")

pts = (event or {}).get("selection", {}).get("points", []) if event else []
click = tuple(pts[0]["customdata"]) if pts and pts[0].get("customdata") else None
if click and click != st.session_state.get("_s_last_click"):
    # a new click on the grid moves the (URL-bound) cell pickers; they are not instantiated yet in this run
    st.session_state["_s_last_click"] = click
    st.session_state["s_cpm"], st.session_state["s_crm"] = click
with st.expander("Cell (click one in the grid, or pick it here)", expanded=False):
    a, b = st.columns(2)
    pm = a.selectbox("PM", pm_order, key="s_cpm", bind="query-params", format_func=name)
    rm = b.selectbox("RM", rm_order, key="s_crm", bind="query-params", format_func=name)
st.subheader("Samples driving the cell")
st.text(f"PM {pm}  ×  RM {rm}  —  variant {variant}")
row = grid[(grid["policy"] == pm) & (grid["reward"] == rm)]
if not row.empty:
    r0 = row.iloc[0]
    st.text(f"cell value {common.ci_num(r0['quality'], r0['lo'], r0['hi'])}   n = {int(r0['n'])}")
if pm in opts["policies"] and rm in opts["rewards"]:
    f = BrowseFilter(variants=(variant,), policies=(pm,), rewards=(rm,), only_mismatch=True)
    n_bad = common.run(browse_count, f)
    top = common.run(browse_page, f, sort="seam", descending=True, page=1, page_size=10)
    st.caption(f"{n_bad:,} samples where this RM scores a {common.md(variant)} response above gold; the 10 with the "
               "highest SEAM:")
    st.dataframe(top[["sample_id", "seam", "hack_rate", "dataset", "source", "prompt"]], hide_index=True,
                 key="drivers")
    st.page_link("views/browser.py", label="Open all of them in the mismatch browser", icon=":material/search:",
                 query_params={"b_pm": [pm], "b_rm": [rm], "b_variant": [variant]})
else:
    st.caption("This cell's models have no scores in the DB (imported results only), so there are no samples to show.")

# ------------------------------------------------------------------ curves vs axis quality
st.subheader("Quality vs each model's own quality")
with st.spinner("Measuring each model alone…"):
    axis = common.run(axis_quality, variant=variant)
pmq = axis[axis["role"] == "policy"].set_index("model")
rmq = axis[axis["role"] == "reward"].set_index("model")
a, b = st.columns(2)
fig_r = go.Figure()
for p in pm_order:
    g = grid[grid["policy"] == p].copy()
    g["xq"] = g["reward"].map(rmq["quality"])
    g = g.dropna(subset=["xq"]).sort_values("xq")
    if g.empty:
        continue
    fig_r.add_scatter(x=g["xq"], y=g["quality"], mode="lines+markers", name=common.plot_text(name(p)),
                      text=[common.plot_text(name(r)) for r in g["reward"]],
                      error_y=dict(type="data", symmetric=False, array=(g["hi"] - g["quality"]).fillna(0),
                                   arrayminus=(g["quality"] - g["lo"]).fillna(0)),
                      hovertemplate="RM %{text}<br>RM quality %{x:.3g}<br>cell %{y:.3g}<extra></extra>")
rm_metric = rmq["metric"].iloc[0] if not rmq.empty else "RM quality"
pm_metric = pmq["metric"].iloc[0] if not pmq.empty else "PM quality"
fig_r.update_layout(xaxis_title=common.plot_text(f"RM quality: {rm_metric}"), yaxis_title="cell value",
                    legend_title_text="PM", height=380, margin=dict(t=30), title="per PM, vs RM quality")
a.plotly_chart(fig_r, key="curve_rm")
fig_p = go.Figure()
for r in rm_order:
    g = grid[grid["reward"] == r].copy()
    g["xq"] = g["policy"].map(pmq["quality"])
    g = g.dropna(subset=["xq"]).sort_values("xq")
    if g.empty:
        continue
    fig_p.add_scatter(x=g["xq"], y=g["quality"], mode="lines+markers", name=common.plot_text(name(r)),
                      text=[common.plot_text(name(p)) for p in g["policy"]],
                      error_y=dict(type="data", symmetric=False, array=(g["hi"] - g["quality"]).fillna(0),
                                   arrayminus=(g["quality"] - g["lo"]).fillna(0)),
                      hovertemplate="PM %{text}<br>PM quality %{x:.3g}<br>cell %{y:.3g}<extra></extra>")
fig_p.update_layout(xaxis_title=common.plot_text(f"PM quality: {pm_metric}"), yaxis_title="cell value",
                    legend_title_text="RM", height=380, margin=dict(t=30), title="per RM, vs PM quality")
b.plotly_chart(fig_p, key="curve_pm")

st.subheader("Axis quality of each model alone")
st.dataframe(pd.DataFrame({
    "model": axis["model"], "role": axis["role"], "n": axis["n"],
    "quality [95% CI]": [common.ci_num(q, lo, hi) for q, lo, hi in zip(axis["quality"], axis["lo"], axis["hi"])],
    "measure": axis["metric"],
}), hide_index=True, key="axis_table")
summary = common.run(experiment_table, "saturation_summary")
if not summary.empty:
    st.subheader("Does it saturate? (`seam experiment`, paired bootstrap over prompts)")
    cols = [c for c in ("axis", "fixed_label", "levels", "saturates_at", "saturated", "last_step", "last_step_lo",
                        "last_step_hi", "description") if c in summary.columns]
    common.table(summary[cols], "sat_summary")
curve = common.run(experiment_table, "saturation_curve")
if not curve.empty and {"policy", "reward", "bon_n", "quality"} <= set(curve.columns):
    with st.expander("Best-of-n curves of the picked cell (`seam experiment`)"):
        cc = curve[(curve["policy"] == pm) & (curve["reward"] == rm)].sort_values("bon_n")
        if cc.empty:
            st.caption("No curve for this cell.")
        else:
            cf = go.Figure(go.Scatter(x=cc["bon_n"], y=cc["quality"], mode="lines+markers",
                                      error_y=dict(type="data", symmetric=False,
                                                   array=(cc["quality_hi"] - cc["quality"]).fillna(0),
                                                   arrayminus=(cc["quality"] - cc["quality_lo"]).fillna(0))))
            cf.update_layout(xaxis_title="n (samples the RM picks from)", yaxis_title="gold-judged quality", height=300)
            st.plotly_chart(cf, key="bon_curve")
if rlhf.empty:
    st.caption("No imported RLHF results: `seam import-rlhf runs.csv` with columns pm, rm, score adds them.")
