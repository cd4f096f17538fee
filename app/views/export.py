"""Filtering & export: drop the top / bottom / random q% by SEAM, see what changes, export the rest.

Why the side-by-side view: the paper's +4.5% comes from dropping high-SEAM samples; before trusting that
on your data you want to see what the filter removes — which sources, how long, how rewarded — against
a random drop of the same size (the control). The export writes exactly the split shown (same SQL,
`analysis.queries.filtering.filter_cte`), as TRL prompt/chosen/rejected with a dataset card, inside the export
folder only.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from analysis.queries import export as export_mod
from analysis.storage import labels as labels_mod
from analysis.queries.base import experiment_table, filter_options
from analysis.queries.filtering import FilterSpec, filter_report
from analysis.queries.selection import NONDEFAULT_MAX_SAMPLES
from app import common

st.title("Filtering & export")
common.require_db()
opts = common.run(filter_options)
s = common.settings()

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    variant = common.pick("variant", opts["variants"], "e_variant", container=c1)
    policy = common.pick("policy model", opts["policies"], "e_pm", container=c2, models=True)
    reward = common.pick("reward model", opts["rewards"], "e_rm", container=c3, models=True)
    c4, c5, c6, c7 = st.columns([2, 3, 2, 1])
    mode = c4.segmented_control("drop", ["top", "bottom", "random"], default="top", key="e_mode", bind="query-params",
                                required=True, help="top = highest SEAM (the paper's filter); random = control")
    q = c5.slider("q (% dropped)", 0, 90, 10, 1, key="e_q", bind="query-params")
    metric = c6.selectbox("by", ["seam", "seam_rel", "hack_rate"], key="e_metric", bind="query-params")
    seed = int(c7.number_input("seed", value=0, min_value=0, step=1, key="e_seed", bind="query-params"))
    by = st.radio("composition by", ["source", "dataset"], horizontal=True, key="e_by", bind="query-params")
    sel_state = st.session_state.get("selection")
    use_sel = False
    if sel_state and sel_state.get("ids"):
        use_sel = st.toggle(f"restrict to the {len(sel_state['ids']):,} samples selected on the "
                            f"{common.md(sel_state.get('origin', 'map'))}", value=True, key="use_sel")

spec = FilterSpec(variant=variant, policy=policy, reward=reward, mode=mode, q=q / 100, metric=metric, seed=seed,
                  sample_ids=tuple(sel_state["ids"]) if use_sel else ())
with st.spinner("Splitting and comparing in DuckDB…"):
    report = common.run(filter_report, spec, bins=30, by=by, max_samples=NONDEFAULT_MAX_SAMPLES)
summ = report["summary"]
if summ.empty or int(summ[summ["group"] == "all"]["n"].iloc[0]) == 0:
    st.warning("No samples for this variant and model pair.")
    st.stop()

st.subheader("Before / after")
scope = report["scope"].iloc[0]
if bool(scope["sampled"]):
    st.caption(f"Preview on a uniform hash sample of {int(scope['n_used']):,} of {int(scope['n_all']):,} samples "
               f"(the same rule ranked within the sample); the export applies it to all {int(scope['n_all']):,}.")
show = summ.copy()
show["mean [95% CI]"] = [common.ci_num(m, lo, hi) for m, lo, hi in zip(show["mean"], show["lo"], show["hi"])]
st.dataframe(show[["group", "n", "mean [95% CI]", "min", "max", "hack_rate", "gold_reward", "gold_tokens",
                   "worse_tokens"]].rename(columns={"mean [95% CI]": f"mean {metric} [95% CI]"}),
             hide_index=True, key="summary")
dropped = summ[summ["group"] == "dropped"]
if not dropped.empty and mode != "random":
    st.caption(f"Dropped: {metric} in [{common.num(dropped['min'].iloc[0])}, {common.num(dropped['max'].iloc[0])}]; "
               f"ties at the threshold broken by sample id.")

COLORS = {"all": "#888888", "kept": "#1f77b4", "dropped": "#d62728"}
cols = st.columns(3)
for col, (column, title) in zip(cols, [("v", metric), ("gold_reward", "gold reward (RM)"),
                                       ("gold_tokens", "gold length (PM tokens)")]):
    h = report[f"hist_{column}"]
    fig = go.Figure()
    for grp in ("kept", "dropped"):
        g = h[h["group"] == grp]
        if g.empty:
            continue
        fig.add_bar(x=(g["bin_lo"] + g["bin_hi"]) / 2, y=g["count"] / g["group_n"], width=g["bin_hi"] - g["bin_lo"],
                    name=f"{grp} (n={int(g['group_n'].iloc[0]):,})", marker_color=COLORS[grp], opacity=0.6)
    fig.update_layout(barmode="overlay", title=title, height=300, margin=dict(t=40, b=10), yaxis_tickformat=".0%",
                      legend=dict(orientation="h", y=-0.25))
    col.plotly_chart(fig, key=f"hist_{column}")

comp = report["composition"]
fig = go.Figure()
for grp in ("all", "kept", "dropped"):
    g = comp[comp["group"] == grp]
    fig.add_bar(x=[common.plot_text(c) for c in g["category"]], y=g["share"], name=grp, marker_color=COLORS[grp],
                customdata=g["n"], hovertemplate="%{x}: %{y:.1%} (n=%{customdata})<extra></extra>")
fig.update_layout(barmode="group", yaxis_tickformat=".0%", height=320, margin=dict(t=40),
                  title=f"composition by {by} (share of each group)")
st.plotly_chart(fig, key="composition")

sel_res = common.run(experiment_table, "selection_results")
if not sel_res.empty:
    with st.expander("Downstream effect of SEAM filtering, measured by `seam experiment` (RM retrained on kept data)"):
        st.caption("delta = condition minus no filtering, paired over evaluation items, with its 95% interval.")
        common.table(sel_res, "selection_results")
aug = common.run(experiment_table, "augmentation_results")
if not aug.empty:
    with st.expander("SEAM-selected augmentation vs random augmentation (`seam experiment`)"):
        common.table(aug, "augmentation_results")

# ------------------------------------------------------------------ export
st.subheader("Export")
st.caption("TRL format (prompt / chosen / rejected), chosen = gold. Each export is a folder with the data, README.md "
           "(dataset card) and card.json, inside this export folder (names cannot leave it):")
st.code(str(s.exports), language=None)
with st.form("export_form"):
    e1, e2, e3 = st.columns(3)
    keep = e1.radio("subset", ["kept", "dropped"], horizontal=True, key="exp_keep")
    fmt = e2.radio("format", ["jsonl", "parquet", "hf"], horizontal=True, key="exp_fmt",
                   format_func=lambda f: {"jsonl": "JSONL", "parquet": "Parquet", "hf": "HF datasets"}[f])
    rejected = e3.radio("rejected", ["hardest", "each"], horizontal=True, key="exp_rej",
                        format_func=lambda r: {"hardest": "highest-reward worse", "each": "one row per worse"}[r])
    e4, e5 = st.columns([2, 1])
    label_policy = e4.radio("pairs whose hand label contradicts them", ["ignore", "drop", "flip"], horizontal=True,
                            key="exp_labels")
    overwrite = e5.checkbox("overwrite an export of the same name", key="exp_over")
    name = st.text_input("export name", value=f"{variant}-{mode}{q}-{keep}", key="exp_name",
                         help="Letters, digits, '.', '_' and '-'; anything else is replaced. Always inside the export folder.")
    submitted = st.form_submit_button("Export", type="primary")
if submitted:
    try:
        lab = labels_mod.consensus(common.labels_df(), common.label_store().finals()) if label_policy != "ignore" else None
        with st.spinner("exporting…"):
            res = export_mod.export_subset(s.db, s.exports, name, spec, keep=keep, fmt=fmt, rejected=rejected,
                                           labels=lab, label_policy=label_policy, overwrite=overwrite)
    except export_mod.ExportError as exc:
        st.error(common.md(exc))
    else:
        st.success(f"Exported {res.n:,} pairs.")
        st.code(str(res.path), language=None)
        st.json(res.card, expanded=False)
        st.session_state["last_export"] = str(res.path)


def _zip_folder(path: Path) -> bytes:
    """The export folder (data, README.md, card.json) as one zip, for the browser's download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                zf.write(f, Path(path.name) / f.relative_to(path))
    return buf.getvalue()


last_export = st.session_state.get("last_export")
if last_export and Path(last_export).is_dir():
    # a download, not only a server path: the app may run on another machine than the browser
    st.download_button(f"Download {Path(last_export).name}.zip", _zip_folder(Path(last_export)),
                       file_name=f"{Path(last_export).name}.zip", mime="application/zip", key="dl_export",
                       on_click="ignore", icon=":material/download:")
