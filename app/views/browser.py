"""Mismatch browser: samples where the RM prefers a worse response over gold, or disagrees with a label.

Why paged in SQL: at 1M samples the matching rows number in the millions; the page asks DuckDB for a
count and one sorted page. Text search is a parameterized `contains` or RE2 `regexp_matches`, so the
user's pattern never becomes SQL. Filters live in the URL so a view can be shared or linked to from
the saturation grid and the prompt map.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import streamlit as st

from analysis.storage import labels as labels_mod
from analysis.queries.base import filter_options
from analysis.queries.browser import (BrowseFilter, browse_count, browse_page, response_scores, responses_by_ids,
                                      sample_info, sample_responses)
from analysis.queries.spotcheck import label_disagreements
from app import common
from app.textdiff import word_diff

st.title("Mismatch browser")
common.require_db()
opts = common.run(filter_options)

mode = st.segmented_control("show", ["RM vs gold", "RM vs hand labels"], default="RM vs gold", key="b_mode",
                            bind="query-params", required=True)


def show_response(col, title: str, row: pd.Series | None, text: str) -> None:
    col.markdown(f"**{common.md(title)}**")
    common.cut_marker(row.get("provenance") if row is not None else None, container=col)
    col.text(text)
    if row is not None:
        col.dataframe(pd.DataFrame([{
            "PM log-prob sum": common.num(row.get("logprob_sum")), "PM log-prob mean": common.num(row.get("logprob_mean")),
            "tokens": row.get("n_tokens"), "RM reward": common.num(row.get("reward_score")),
        }]), hide_index=True)


def provenance(col, raw: str | None) -> None:
    if not raw:
        return
    try:
        prov = json.loads(raw)
    except (TypeError, ValueError):
        col.text(str(raw))
        return
    if not isinstance(prov, dict):
        col.json(prov)
        return
    # one-line summary of the keys the pipeline writes (analysis/pipeline.py, analysis/worse.py)
    nb = prov.get("neighbour") or prov.get("neighbor")
    summary = []
    if nb:
        summary.append(f"neighbour sample {nb} (cosine similarity {prov.get('similarity', '?')})")
    if prov.get("kinds"):
        summary.append("perturbations: " + ", ".join(map(str, prov["kinds"])))
    if prov.get("generator"):
        summary.append(f"generator: {prov['generator']}")
    col.caption("provenance")
    if summary:
        col.text("; ".join(summary))
    col.json(prov, expanded=len(prov) <= 4)
    if nb:
        info = common.run(sample_info, str(nb))
        if info:
            col.caption("neighbour sample's prompt")
            col.text(info["prompt"])


# ==================================================================== hand-label disagreements
if mode == "RM vs hand labels":
    rm = common.pick("reward model", opts["rewards"], "b_lrm")
    cons = labels_mod.consensus(common.labels_df(), common.label_store().finals())
    if cons.empty:
        st.info("No hand labels yet: label pairs on the Spot-check page.")
        st.stop()
    dis = common.run(label_disagreements, cons, reward=rm)
    st.caption(f"{len(dis)} of {len(cons)} consensus-labeled pairs where {common.md(rm)} ranks the pair against the label"
               " (largest score gaps first).")
    if dis.empty:
        st.stop()
    ev = st.dataframe(dis, hide_index=True, on_select="rerun", selection_mode="single-row", key="dis_rows")
    sel = ev.selection.rows if ev and ev.selection else []
    r = dis.iloc[sel[0] if sel else 0]
    info = common.run(sample_info, r["sample_id"])
    st.subheader("Pair")
    st.text(info["prompt"] if info else "")
    sc = common.run(response_scores, [r["a_id"], r["b_id"]])
    texts = common.run(responses_by_ids, [r["a_id"], r["b_id"]]).set_index("response_id")
    a, b = st.columns(2)
    for col, rid, side in ((a, r["a_id"], "a"), (b, r["b_id"], "b")):
        resp = sc[(sc["response_id"] == rid)]
        better = " — preferred by the label" if r["label"] == side else ""
        variant = texts.loc[rid, "variant"] if rid in texts.index else "?"
        col.markdown(f"**Response {side}** ({common.md(variant)}){common.md(better)}")
        common.cut_marker(texts.loc[rid, "provenance"] if rid in texts.index else None, container=col)
        col.text(texts.loc[rid, "text"] if rid in texts.index else "")
        col.dataframe(resp[["role", "model", "value"]], hide_index=True, key=f"dis_scores_{side}")
    diff_text, _, ratio = word_diff(texts.loc[r["a_id"], "text"], texts.loc[r["b_id"], "text"])
    st.markdown(f"**Word diff** a → b (similarity {ratio:.2f}; `[-removed-]` `{{+added+}}`)")
    st.code(diff_text, language=None, wrap_lines=True)
    st.stop()

# ==================================================================== RM vs gold
def row_key(r) -> str:
    """A row's identity in the URL (`b_row`): sample, variant, PM, RM."""
    return "|".join(str(x) for x in (r.sample_id, r.variant, r.policy, r.reward))


sel_state = st.session_state.get("selection")
with st.expander("Filters", expanded="b_row" not in st.query_params):
    c1, c2, c3, c4 = st.columns(4)
    variants = common.pick_many("variant", opts["variants"], "b_variant", container=c1)
    pms = common.pick_many("policy model", opts["policies"], "b_pm", container=c2, models=True)
    rms = common.pick_many("reward model", opts["rewards"], "b_rm", container=c3, models=True)
    datasets = common.pick_many("dataset", opts["datasets"], "b_ds", container=c4)
    c5, c6, c7, c8 = st.columns(4)
    sources = c5.multiselect("source", opts["sources"], default=[], key="b_src", bind="query-params",
                             help="empty = all")
    smin = c6.number_input("SEAM ≥", value=0.0, min_value=0.0, max_value=1.0, step=0.01, format="%g", key="b_smin",
                           bind="query-params")
    smax = c7.number_input("SEAM ≤", value=1.0, min_value=0.0, max_value=1.0, step=0.01, format="%g", key="b_smax",
                           bind="query-params")
    only = c8.toggle("only RM-prefers-worse", value=True, key="b_only", bind="query-params",
                     help="rows where the RM scores at least one worse response above gold (hack rate > 0)")
    c9, c10, c11, c12 = st.columns([3, 1, 2, 1])
    search = c9.text_input("search prompt and gold", value="", key="b_q", bind="query-params",
                           placeholder="text, or a regular expression (RE2)")
    regex = c10.toggle("regex", value=False, key="b_re", bind="query-params")
    sort = c11.selectbox("sort by", ["seam", "seam_rel", "hack_rate", "mean_tokens", "sample_id"], key="b_sort",
                         bind="query-params")
    desc = c12.toggle("descending", value=True, key="b_desc", bind="query-params")
    use_sel = False
    if sel_state and sel_state.get("ids"):
        use_sel = st.toggle(f"only the {len(sel_state['ids']):,} samples selected on the {common.md(sel_state.get('origin', 'map'))}",
                            value=True, key="use_sel")

if not (variants and pms and rms and datasets):
    st.info("Each of variant, policy model, reward model and dataset needs at least one value.")
    st.stop()

f = BrowseFilter(variants=tuple(variants), policies=tuple(pms), rewards=tuple(rms),
                 datasets=tuple(datasets) if len(datasets) < len(opts["datasets"]) else (),
                 sources=tuple(sources), seam_min=smin if smin > 0 else None, seam_max=smax if smax < 1 else None,
                 search=search, regex=regex, only_mismatch=only,
                 sample_ids=tuple(sel_state["ids"]) if use_sel else ())
# A text search, a non-default sort or a SEAM definition off the stored one reads every matching row of the
# DB (a custom slice): say so while it runs, and stop it after a time bound rather than hang.
custom = bool(search) or sort != "seam" or not desc or (f.alpha, f.tau) != (1.0, 0.0)
limit = common.CUSTOM_QUERY_LIMIT_S if custom else None
size = 25
with st.spinner("Searching every matching row…" if custom else "Loading…"):
    try:
        total = common.run(browse_count, f, _limit_s=limit)
        n_pages = max(1, math.ceil(total / size))
        st.caption(f"{total:,} matching rows (sample × variant × PM × RM).")
        page = st.pagination(n_pages, key="b_page", bind="query-params")
        rows = common.run(browse_page, f, sort=sort, descending=desc, page=min(page, n_pages), page_size=size,
                          _limit_s=limit)
    except ValueError as exc:  # invalid regex
        st.error(common.md(exc))
        st.stop()
    except common.QueryTimeout as exc:
        st.warning(str(exc))
        st.stop()
if rows.empty:
    st.info("Nothing matches these filters.")
    st.stop()
row_keys = [row_key(r) for r in rows.itertuples()]
short = common.display_names(list(opts["policies"]) + list(opts["rewards"]))
table_rows = rows.assign(policy=rows["policy"].map(lambda m: short.get(m, m)),
                         reward=rows["reward"].map(lambda m: short.get(m, m)))
# SEAM and hack rate first; a short table so the detail panel below is in view without scrolling
ev = common.table(
    table_rows[["seam", "hack_rate", "seam_rel", "prompt", "variant", "policy", "reward", "k", "rm_prefers_gold",
                "pm_prefers_gold", "mean_tokens", "dataset", "source", "sample_id"]],
    "rows", max_rows=6, on_select="rerun", selection_mode="single-row",
    column_config={"prompt": st.column_config.TextColumn(width="large"),
                   "seam": st.column_config.NumberColumn(format=common.NUM_FORMAT),
                   "seam_rel": st.column_config.NumberColumn(format=common.NUM_FORMAT),
                   "hack_rate": st.column_config.NumberColumn(format=common.NUM_FORMAT)})
sel = ev.selection.rows if ev and ev.selection else []
if sel:  # the selected row goes into the URL, so a shared link opens the same detail
    row_i = sel[0]
    if st.query_params.get("b_row") != row_keys[row_i]:
        st.query_params["b_row"] = row_keys[row_i]
else:
    url_row = st.query_params.get("b_row")
    row_i = row_keys.index(url_row) if url_row in row_keys else 0
    if url_row not in row_keys:
        st.caption("Showing the first row; click a row to inspect another.")
row = rows.iloc[row_i]

# ------------------------------------------------------------------ detail
st.subheader("Detail")
info = common.run(sample_info, row["sample_id"])
resp = common.run(sample_responses, row["sample_id"], variant=row["variant"], policy=row["policy"],
                    reward=row["reward"])
st.text(f"sample {row['sample_id']}   dataset {info['dataset']}   source {info['source']}   "
        f"variant {row['variant']}   PM {row['policy']}   RM {row['reward']}")
m1, m2, m3, m4 = st.columns(4)
m1.metric("SEAM", common.num(row["seam"]))
m2.metric("SEAM_rel", common.num(row["seam_rel"]))
m3.metric("hack rate", common.num(row["hack_rate"]), help=f"k = {row['k']} worse responses")
m4.metric("PM prefers gold", "yes" if row["pm_prefers_gold"] else "no")
st.markdown("**Prompt**")
st.text(info["prompt"])

gold = resp[resp["variant"] == "gold"]
worse = resp[resp["variant"] != "gold"].sort_values("reward_score", ascending=False)
if gold.empty or worse.empty:
    st.warning("This sample has no scored gold / worse responses for this model pair.")
    st.stop()
g = gold.iloc[0]
labels = [f"#{int(w.idx)}  reward {common.num(w.reward_score, 4)}{'  > gold' if w.hack else ''}"
          for w in worse.itertuples()]
# the key names the row: a key shared by all rows kept the previous row's option labels (a stale reward)
pick_i = st.selectbox("worse response (highest reward first)", range(len(worse)), format_func=lambda i: labels[i],
                      key=f"worse_pick|{row_keys[row_i]}")
w = worse.iloc[pick_i]
a, b = st.columns(2)
show_response(a, "Gold", g, g["text"])
show_response(b, f"Worse ({row['variant']}){' — RM prefers it' if w['hack'] else ''}", w, w["text"])
provenance(b, w["provenance"])

diff_text, diff_table, ratio = word_diff(g["text"], w["text"])
st.markdown(f"**Word diff** gold → worse (similarity {ratio:.2f}; `[-removed-]` `{{+added+}}`)")
st.code(diff_text, language=None, wrap_lines=True)
if not diff_table.empty:
    with st.expander(f"{len(diff_table)} changed spans"):
        st.dataframe(diff_table, hide_index=True, key="diff_table")
with st.expander("All responses of this sample for the model pair"):
    st.dataframe(resp[["variant", "idx", "reward_score", "hack", "logprob_sum", "logprob_mean", "n_tokens", "text"]],
                 hide_index=True, key="all_resp")
