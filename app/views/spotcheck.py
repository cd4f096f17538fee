"""Spot-check: blind A/B labeling of random pairs, and the RM mismatch rate it measures.

Why blind and seeded: the paper's 35% mismatch on PM-generated pairs is a human judgement; to measure
it honestly the annotator must not see which side is gold, which RM preferred what, or the model
scores until the label is given, and left/right must be randomized (position bias). The queue is a
deterministic function of its settings (kind, seed, strata, size), and every label is committed to
SQLite the moment the button is pressed, keyed by the two response ids and the annotator — so closing
the tab, restarting the app or a crash loses nothing and the same URL resumes where you stopped.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from analysis.storage import labels as labels_mod
from analysis.queries.base import filter_options
from analysis.queries.browser import response_scores, responses_by_ids
from analysis.queries.rlhf import rlhf_pair_cells
from analysis.queries.spotcheck import label_mismatch, spotcheck_pairs
from app import common

st.title("Spot-check")
common.require_db()
opts = common.run(filter_options)
store = common.label_store()


def _commit_name() -> None:
    """The name goes into the URL and the field closes, so focus leaves it and A/B/T/S/U reach the buttons
    (typing them into the field used to append to the name: 'alicea')."""
    name = (st.session_state.get("annotator") or "").strip()
    if name:
        st.query_params["annotator"] = name
    st.session_state["edit_name"] = False


def _change_name() -> None:
    st.session_state["edit_name"] = True
    st.session_state["annotator"] = st.query_params.get("annotator", "")


annotator = (st.query_params.get("annotator") or "").strip()
started = bool(annotator) and not st.session_state.get("edit_name")
if started:
    n1, n2 = st.columns([6, 1])
    n1.markdown(f"Labeling as **{common.md(annotator)}**")
    n2.button("change annotator", key="change_name", on_click=_change_name, width="stretch")
else:
    st.text_input("annotator", key="annotator", placeholder="your name, then press Enter", on_change=_commit_name,
                  help="Labels are stored per annotator; agreement between annotators is measured below. Press "
                       "Enter: the field closes and the keyboard shortcuts A, B, T, S, U work.")

# the settings fold away once labeling starts, so the pair and its buttons fit above the fold (1280x720)
with st.expander("Queue settings", expanded=not started):
    c2, c3, c4, c5, c6 = st.columns([2, 2, 1, 1, 2])
    kind = c2.segmented_control("pairs", ["policy", "dataset", "rlhf"], default="policy", key="c_kind",
                                bind="query-params", required=True,
                                format_func=lambda k: {"policy": "PM samples", "dataset": "gold vs worse",
                                                       "rlhf": "RLHF: start vs trained"}[k],
                                help="PM samples: two responses the PM itself wrote for one prompt (the paper's 35%). "
                                     "Gold vs worse: the reference answer against one worse response. RLHF: the "
                                     "starting PM's and the RL-trained policy's answer to a held-out prompt "
                                     "(`seam rlhf-grid`); these labels replace the proxy judge on the Saturation "
                                     "page.")
    cell = None
    if kind == "rlhf":
        rl_cells = common.run(rlhf_pair_cells)
        cell_names = {r.cell_id: f"{common.model_name(r.policy, list(rl_cells['policy']))} × "
                                 f"{common.model_name(r.reward, list(rl_cells['reward']))} ({r.n_pairs} pairs)"
                      for r in rl_cells.itertuples()}
        pick = c3.selectbox("grid cell", ["all"] + list(cell_names), key="c_cell", bind="query-params",
                            format_func=lambda c: "all cells" if c == "all" else cell_names.get(c, c),
                            help="PM × RM cell of `seam rlhf-grid`; all cells take turns in the queue.")
        cell = None if pick == "all" else pick
        variant, generator = "rejected", None
    elif kind == "dataset":
        variant = common.pick("worse variant", opts["variants"], "c_variant",
                              default="rejected" if "rejected" in opts["variants"] else None, container=c3)
        generator = None
    else:
        variant = "rejected"
        gen = c3.selectbox("PM that wrote them", ["any"] + opts["policies"], key="c_gen", bind="query-params",
                           format_func=lambda m: m if m == "any" else common.model_name(m, opts["policies"]))
        generator = None if gen == "any" else gen
    strat = c4.selectbox("stratify by", ["none", "dataset", "source"], key="c_strat", bind="query-params",
                         disabled=kind == "rlhf")
    seed = int(c5.number_input("seed", value=0, min_value=0, step=1, key="c_seed", bind="query-params"))
    keep_cut = c6.toggle("include cut-off responses", value=False, key="c_cut", bind="query-params",
                         help="Responses whose generation hit the token cap end mid-sentence; a judgement between "
                              "two fragments is not one between two answers, so they are left out by default.")
    n_queue = st.slider("queue size", 10, 500, 50, 10, key="c_n", bind="query-params")

queue = common.run(spotcheck_pairs, kind=kind, n=n_queue, seed=seed, variant=variant, generator=generator,
                   stratify=None if strat == "none" else strat, exclude_truncated=not keep_cut, cell=cell)
session = (f"rlhf|{cell or 'all'}|{seed}|{n_queue}" if kind == "rlhf" else
           f"{kind}|{variant if kind == 'dataset' else (generator or 'any')}|{strat}|{seed}|{n_queue}")

if queue.empty:
    st.warning("No pairs of this kind in the DB" + {
        "policy": " (PM pairs need `policy` responses: N samples per prompt from the PM, written by the "
                  "precompute's policy-sampling step).",
        "rlhf": " (`seam rlhf-grid` stores every held-out pair of starting PM vs trained policy per cell; cells "
                "recorded by an older version have none).",
    }.get(kind, "."))
    st.stop()


def pair_key(a_id: str, b_id: str) -> str:
    return f"{a_id}|{b_id}"


def record(choice: str, a_id: str, b_id: str, left_id: str, sample_id: str) -> None:
    """Button callback: commit the label before the rerun, remember it for the reveal.

    The pair's ids travel with the button (its key names the pair), and a label is taken only for the pair
    on screen: a second keypress that arrives before the next pair is drawn names a pair that is no longer
    current and is ignored (a fast A-then-B used to label a pair nobody had seen)."""
    if st.session_state.get("current_pair") != pair_key(a_id, b_id):
        return
    st.session_state["current_pair"] = None
    if choice in ("left", "right"):
        better = left_id if choice == "left" else (b_id if left_id == a_id else a_id)
        label = "a" if better == a_id else "b"
    else:
        label = choice
    store.put(a_id, b_id, annotator, label, kind=kind, sample_id=sample_id, shown_left=left_id, session=session)
    st.session_state["last_label"] = {"a_id": a_id, "b_id": b_id, "label": label, "left_id": left_id,
                                      "sample_id": sample_id, "annotator": annotator}


def undo() -> None:
    last = st.session_state.pop("last_label", None)
    if last:
        store.delete(last["a_id"], last["b_id"], last["annotator"])


def reveal_rlhf(last: dict) -> None:
    """Which side was the starting PM and which the trained policy, with the judge's scores (RLHF pairs
    have no rows in the score tables: their roles travel in the queue's provenance)."""
    import json

    row = queue[(queue["a_id"] == last["a_id"]) & (queue["b_id"] == last["b_id"])]
    if row.empty:
        return
    r = row.iloc[0]
    prov = {r["a_id"]: json.loads(r["a_prov"]), r["b_id"]: json.loads(r["b_prov"])}
    left, right = last["left_id"], (last["b_id"] if last["left_id"] == last["a_id"] else last["a_id"])
    you = {"a": last["a_id"], "b": last["b_id"]}.get(last["label"])
    with st.expander("Revealed: the pair you just labeled", expanded=True):
        st.text(f"your label: {'A (left)' if you == left else 'B (right)' if you == right else last['label']}")
        jl, jr = prov[left].get("judge"), prov[right].get("judge")
        judge_pick = None if jl is None or jr is None or jl == jr else (left if jl > jr else right)
        st.dataframe(pd.DataFrame({
            "side": ["A (left)", "B (right)"], "was": [prov[left]["role"], prov[right]["role"]],
            "model": [prov[left]["model"], prov[right]["model"]],
            "judge reward": [common.num(jl, 4), common.num(jr, 4)],
            "judge vs you": ["" if you is None else "judge tie" if judge_pick is None
                             else "agrees" if judge_pick == you else "disagrees"] * 2}),
            hide_index=True, key="reveal_rlhf")
        st.caption("judge = the grid's proxy judge (an RM outside the grid); your labels replace it on the "
                   "Saturation page for this cell.")


def reveal(last: dict) -> None:
    """Scores of the pair just labeled, A (left) before B (right), formatted."""
    if kind == "rlhf":
        reveal_rlhf(last)
        return
    with st.expander("Revealed: the pair you just labeled", expanded=True):
        # scores of the whole queue are read once (one scan of the score tables) and cached
        queue_scores = common.run(response_scores, sorted(set(queue["a_id"]) | set(queue["b_id"])))
        sc = queue_scores[queue_scores["response_id"].isin([last["a_id"], last["b_id"]])]
        if sc["response_id"].nunique() < 2:
            sc = common.run(response_scores, [last["a_id"], last["b_id"]])
        left, right = last["left_id"], (last["b_id"] if last["left_id"] == last["a_id"] else last["a_id"])
        you = {"a": last["a_id"], "b": last["b_id"]}.get(last["label"])
        st.text(f"your label: {'A (left)' if you == left else 'B (right)' if you == right else last['label']}")
        piv = sc.pivot_table(index=["role", "model"], columns="response_id", values="value").reset_index()
        if left in piv and right in piv:
            agrees = []
            for _, r in piv.iterrows():
                if r["role"] != "reward" or you is None:
                    agrees.append("")
                elif r[left] == r[right]:
                    agrees.append("RM tie")
                else:
                    rm_pick = left if r[left] > r[right] else right
                    agrees.append("agrees" if rm_pick == you else "MISMATCH")
            show = pd.DataFrame({"role": piv["role"], "model": piv["model"],
                                 "A (left)": piv[left].map(lambda v: common.num(v, 4)),
                                 "B (right)": piv[right].map(lambda v: common.num(v, 4)), "RM vs you": agrees})
            st.dataframe(show, hide_index=True, key="reveal")
            st.caption(f"`policy` rows: PM mean token log-prob; `reward` rows: RM reward. "
                       f"{int((piv['role'] == 'reward').sum())} RM(s).")
        var = sc.drop_duplicates("response_id").set_index("response_id")["variant"]
        st.text(f"A was {var.get(left, '?')}, B was {var.get(right, '?')}")


@st.fragment
def labeling() -> None:
    """The pair, its buttons and the reveal: a label reruns only this fragment (not the statistics below),
    and the queue is cached, so the next pair is drawn without a query."""
    done = store.labeled_pairs(annotator)
    is_done = [(a, b) in done for a, b in zip(queue["a_id"], queue["b_id"])]
    n_done = sum(is_done)
    remaining = queue[[not d for d in is_done]]
    if remaining.empty:
        st.session_state["current_pair"] = None
        st.progress(1.0, text=f"{n_done} of {len(queue)} pairs in this queue labeled by you")
        st.success("Queue finished. Raise the queue size or change the seed for more pairs.")
    else:
        p = remaining.iloc[0]
        left_id, left_text, right_text, left_prov, right_prov = (
            (p["b_id"], p["b_text"], p["a_text"], p["b_prov"], p["a_prov"]) if p["swap"]
            else (p["a_id"], p["a_text"], p["b_text"], p["a_prov"], p["b_prov"]))
        key = pair_key(p["a_id"], p["b_id"])
        st.session_state["current_pair"] = key
        args = (p["a_id"], p["b_id"], left_id, p["sample_id"])
        # The buttons sit above the pair but are sent after it: the browser draws the new pair's text before
        # the buttons that label it exist, so a fast keypress can never label a pair whose text is not shown
        # yet (a keypress that still hits the previous pair's button names a pair no longer current: ignored).
        buttons = st.container()
        st.caption("Keyboard: A, B, T (tie), S (skip), U (undo), with or without Shift. Model scores and which "
                   "side is gold stay hidden until you label.")
        with st.container(border=True, height=110):
            st.text(p["prompt"])
        a, b = st.columns(2)
        for col, name, text, prov in ((a, "A", left_text, left_prov), (b, "B", right_text, right_prov)):
            with col.container(border=True, height=260):
                st.markdown(f"**{name}**")
                common.cut_marker(prov)
                st.text(text)
        with buttons:
            b1, b2, b3, b4, b5, b6 = st.columns([2, 2, 1, 1, 1, 3])
            can_undo = "last_label" in st.session_state
            keys = (  # (column, label, key, shortcut, callback, args, primary, disabled)
                (b1, "A is better", f"lab_a|{key}", "A", record, ("left", *args), True, False),
                (b2, "B is better", f"lab_b|{key}", "B", record, ("right", *args), True, False),
                (b3, "Tie", f"lab_tie|{key}", "T", record, ("tie", *args), False, False),
                (b4, "Skip", f"lab_skip|{key}", "S", record, ("skip", *args), False, False),
                (b5, "Undo", "undo", "U", undo, (), False, not can_undo))
            for col, text, k, sc, fn, fargs, primary, off in keys:
                col.button(text, key=k, shortcut=sc, on_click=fn, args=fargs, width="stretch", disabled=off,
                           type="primary" if primary else "secondary")
            b6.progress(n_done / len(queue), text=f"{n_done} of {len(queue)} pairs in this queue labeled by you")
        # Shift+A labels like A (Caps Lock or a held Shift used to do nothing): Streamlit matches a shortcut's
        # modifiers exactly, so each key gets a twin button bound to Shift+key, same callback and pair ids, in
        # a 1-pixel scroll container: out of sight but mounted, so its shortcut listens (no custom HTML/CSS).
        with st.container(height=1, border=False, key="shift_keys"):
            for _, _, k, sc, fn, fargs, _, off in keys:
                st.button(f"Shift+{sc}", key=f"shift|{k}", shortcut=f"Shift+{sc}", on_click=fn, args=fargs,
                          disabled=off)
    last = st.session_state.get("last_label")
    if last:
        reveal(last)


if not annotator:
    st.info("Enter your name above and press Enter to start labeling. Labels are saved as you give them.")
else:
    labeling()
    st.button("Refresh statistics", key="refresh_stats", help="The statistics below update on a full rerun; "
                                                             "labeling reruns only the pair above.")

# ==================================================================== adjudication, export, import
lab = store.all()
finals = store.finals()
with st.expander("Adjudicate · export · import labels", expanded=False):
    t_adj, t_exp, t_imp = st.tabs(["Adjudicate disagreements", "Export labels", "Import labels"])
    with t_adj:
        dis = labels_mod.disagreements(lab, finals)
        if dis.empty:
            st.caption("No pair has labels that disagree.")
        else:
            st.caption(f"{len(dis)} pair(s) where annotators disagree; {int((dis['final'] != '').sum())} settled. "
                       "A recorded final label replaces the majority vote in every statistic.")
            ev = st.dataframe(dis[["votes", "final", "kind", "sample_id", "a_id", "b_id"]], hide_index=True,
                              key="adj_rows", on_select="rerun", selection_mode="single-row")
            i = ev.selection.rows[0] if ev and ev.selection and ev.selection.rows else 0
            d = dis.iloc[i]
            texts = common.run(responses_by_ids, [d["a_id"], d["b_id"]]).set_index("response_id")
            x, y = st.columns(2)
            for col, rid, side in ((x, d["a_id"], "a"), (y, d["b_id"], "b")):
                col.markdown(f"**Response {side}**")
                col.text(texts.loc[rid, "text"] if rid in texts.index else "")
            f1, f2, f3 = st.columns([1, 2, 1])
            final = f1.radio("final label", ["a", "b", "tie"], horizontal=True, key="adj_label")
            note = f2.text_input("note", key="adj_note")
            if f3.button("Record final label", key="adj_save", type="primary",
                         disabled=not annotator, help="Recorded under your annotator name."):
                store.put_final(d["a_id"], d["b_id"], final, annotator, note)
                st.rerun()
    with t_exp:
        fmt = st.radio("format", list(labels_mod.EXPORT_FORMATS), horizontal=True, key="lab_fmt",
                       format_func=lambda f: {"csv": "CSV", "jsonl": "JSONL", "argilla": "Argilla (JSON records)",
                                              "labelstudio": "Label Studio (JSON tasks)"}[f])
        texts = prompts = None
        if fmt in ("argilla", "labelstudio") and not lab.empty:
            rs = common.run(responses_by_ids, sorted(set(lab["a_id"]) | set(lab["b_id"])))
            texts = dict(zip(rs["response_id"], rs["text"]))
            prompts = dict(zip(queue["sample_id"], queue["prompt"]))
        ext = {"csv": "csv", "jsonl": "jsonl"}.get(fmt, "json")
        st.download_button(f"Download {len(lab)} label(s)", labels_mod.export_labels(lab, fmt, texts, prompts),
                           file_name=f"labels.{fmt}.{ext}" if fmt in ("argilla", "labelstudio") else f"labels.{ext}",
                           key="lab_download", on_click="ignore", icon=":material/download:")
    with t_imp:
        ifmt = st.radio("format", list(labels_mod.EXPORT_FORMATS), horizontal=True, key="imp_fmt")
        up = st.file_uploader("labels file", type=["csv", "jsonl", "json"], key="imp_file")
        if up is not None and st.button("Import", key="imp_go"):
            try:
                rows = labels_mod.parse_labels(up.getvalue().decode("utf-8"), ifmt)
            except (ValueError, UnicodeDecodeError) as exc:
                st.error(common.md(f"Could not import: {exc}"))
            else:
                st.success(f"Imported {store.import_labels(rows)} label(s).")
                lab = store.all()

# ==================================================================== statistics
st.header("RM mismatch vs labels")
cons = labels_mod.consensus(lab, finals)
if cons.empty:
    st.caption("No labels yet.")
    st.stop()
mm = common.run(label_mismatch, cons)
target = st.select_slider("target precision (± percentage points, 95%)", [1, 2, 3, 5, 7.5, 10, 15], value=5,
                          key="c_target", bind="query-params")
rows = []
for r in mm.itertuples():
    need = labels_mod.labels_needed(labels_mod.planning_rate(int(r.wrong), int(r.n)), target / 100, int(r.n))
    half = (r.mismatch_hi - r.mismatch_lo) / 2 if r.n else math.nan
    rows.append({"pairs": r.kind, "RM": r.reward, "n": r.n, "RM wrong": r.wrong, "RM ties": r.rm_ties,
                 "label ties": r.label_ties,
                 "mismatch [95% CI]": common.ci_pct(r.mismatch, r.mismatch_lo, r.mismatch_hi),
                 "± now": "–" if math.isnan(half) else f"±{100 * half:.1f} pp",
                 f"label more for ±{target} pp": need})
st.dataframe(pd.DataFrame(rows), hide_index=True, key="mismatch")
st.caption(f"One consensus label per pair (majority of non-skip labels; {cons.attrs.get('n_split', 0)} split pair(s) "
           "left out). Wilson 95% intervals. The planner assumes the rate in the current interval closest to 50% "
           "(the worst case the labels still allow).")

st.subheader("Agreement between annotators")
kt = labels_mod.kappa_table(lab)
if kt.empty:
    st.caption("Needs two annotators labeling the same pairs (same kind, seed and queue settings).")
else:
    st.dataframe(kt.assign(agreement=kt["agreement"].map(common.pct), kappa=kt["kappa"].map(common.num)), hide_index=True,
                 key="kappa")
    st.caption("Cohen's κ over pairs both annotators judged (skips excluded); labels a / b / tie.")
st.dataframe(labels_mod.side_counts(lab), hide_index=True, key="per_annotator")
st.caption("Choices per annotator as seen on screen (A = left, B = right).")
