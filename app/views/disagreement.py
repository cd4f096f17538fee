"""Why does the RM disagree? Response features vs the RM's mismatch rate, per RM, with Wilson intervals.

Why: knowing *that* an RM prefers worse responses 20% of the time says little about how to fix it; knowing
that it does so 40% of the time when the worse response is longer, and 10% otherwise, names a bias (length,
refusals, formatting, hedging, language, or agreeing with the PM). Each feature is a difference between the
worse response and its gold one (analysis/queries/disagreement.py); click a feature to read its pairs.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.queries.base import filter_options
from analysis.queries.disagreement import FEATURES, feature_effects, feature_pairs
from app import common

st.title("Why does the RM disagree?")
common.require_db()
opts = common.run(filter_options)

c1, c2, c3 = st.columns([3, 2, 2])
variants = common.pick_many("worse variants", opts["variants"], "w_variant", container=c1)
policy = common.pick("PM (for the log-prob feature)", opts["policies"], "w_pm", container=c2, models=True)
reward = common.pick("reward model (pairs)", opts["rewards"], "w_rm", container=c3, models=True)
if not variants or not reward:
    st.info("Pick at least one worse variant and a reward model.")
    st.stop()

eff = common.run(feature_effects, variants=tuple(variants), policy=policy)
st.caption("A pair is a gold response and one worse response of the same prompt; mismatch = the RM scores the worse "
           "one higher. For each feature: the mismatch rate of pairs that have it vs pairs that do not, Wilson 95% "
           "intervals, per RM (at most 200,000 pairs per RM, a fixed hash sample).")

names = common.display_names(opts["rewards"])
fig = go.Figure()
for rm, g in eff.groupby("reward", sort=True):
    g = g[g["n_with"] > 0]
    fig.add_scatter(x=g["diff"], y=g["label"], mode="markers", name=common.plot_text(names.get(rm, rm)),
                    error_x=dict(type="data", symmetric=False, array=(g["rate_with_hi"] - g["rate_without"]) - g["diff"],
                                 arrayminus=g["diff"] - (g["rate_with_lo"] - g["rate_without"])),
                    customdata=g["n_with"], hovertemplate="%{x:+.1%} (n with = %{customdata})<extra></extra>")
fig.add_vline(x=0, line_dash="dot")
fig.update_layout(height=340, margin=dict(t=10), xaxis_tickformat="+.0%",
                  xaxis_title="mismatch rate with the feature − without (bars: the with-rate's 95% interval)")
st.plotly_chart(fig, key="effects")

one = eff[eff["reward"] == reward].sort_values("diff", ascending=False, na_position="last").reset_index(drop=True)
show = pd.DataFrame({
    "feature": one["label"],
    "pairs with it": one["n_with"],
    "mismatch with [95% CI]": [common.ci_pct(p, lo, hi) for p, lo, hi in
                               zip(one["rate_with"], one["rate_with_lo"], one["rate_with_hi"])],
    "mismatch without [95% CI]": [common.ci_pct(p, lo, hi) for p, lo, hi in
                                  zip(one["rate_without"], one["rate_without_lo"], one["rate_without_hi"])],
    "difference": [("–" if pd.isna(d) else f"{100 * d:+.1f} pp") for d in one["diff"]],
})
st.subheader(f"{common.md(names.get(reward, reward))}: click a feature to read its pairs")
ev = st.dataframe(show, hide_index=True, key="features", on_select="rerun", selection_mode="single-row")
sel = ev.selection.rows if ev and ev.selection else []
url_feat = st.query_params.get("w_feat")
if sel:
    feat = one["feature"].iloc[sel[0]]
    if url_feat != feat:
        st.query_params["w_feat"] = feat
elif url_feat in FEATURES:
    feat = url_feat
else:
    st.caption("Select a row to list its pairs.")
    st.stop()

only = st.toggle("only mismatches", value=True, key="w_only", bind="query-params")
pairs = common.run(feature_pairs, feat, reward, variants=tuple(variants), policy=policy, only_mismatch=only)
st.caption(f"{len(pairs)} pair(s) with “{common.md(FEATURES[feat][0])}” for {common.md(names.get(reward, reward))}"
           " (largest RM preference for the worse response first, at most 50).")
if pairs.empty:
    st.stop()
pv = st.dataframe(pairs.assign(r_w=pairs["r_w"].map(common.num), r_g=pairs["r_g"].map(common.num))[
    ["prompt", "variant", "r_w", "r_g", "mismatch", "sample_id"]], hide_index=True, key="feature_pairs",
    on_select="rerun", selection_mode="single-row")
psel = pv.selection.rows if pv and pv.selection else []
p = pairs.iloc[psel[0] if psel else 0]
st.text(p["prompt"])
a, b = st.columns(2)
a.markdown(f"**Gold** (reward {common.md(common.num(p['r_g']))})")
a.text(p["g"])
b.markdown(f"**Worse: {common.md(p['variant'])}** (reward {common.md(common.num(p['r_w']))})")
b.text(p["w"])
st.page_link("views/browser.py", label="Open this sample in the mismatch browser", icon=":material/search:",
             query_params={"b_variant": [p["variant"]], "b_rm": [reward], "b_only": "false",
                           "b_q": p["prompt"][:60]})
