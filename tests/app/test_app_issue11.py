"""AppTests for the dashboard fixes of issue 11: numbers that never mislead (stale picker reward, tiny SEAM
formatted by significant digits, labels counted by screen side, an honest planner), cut-off responses marked
and left out of the queue, short model names, shareable URLs, and rows left out on purpose counted apart
from malformed rows. Every test fails on the code before the fix (see the assertion messages)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3

import duckdb
import pandas as pd
import pytest

from analysis.storage import labels as labels_mod
from analysis.storage import store


@pytest.fixture(scope="module")
def db(synthetic_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("issue11") / "seam.duckdb"
    shutil.copy(synthetic_db(160, seed=11), path)
    return path


def _rewards(db, sample_id, variant, policy, reward) -> list[float]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("""SELECT s.score FROM responses r JOIN rm_scores s USING (response_id)
                              WHERE r.sample_id = ? AND r.variant = ? AND s.reward = ?""",
                           [sample_id, variant, reward]).fetchall()
    finally:
        con.close()
    return sorted((r[0] for r in rows), reverse=True)


# ------------------------------------------------------------------------------------------- item 1, 11

def test_worse_picker_shows_the_reward_of_the_selected_row(run_app, find_frame, db):
    """Select two rows in turn (the selected row travels in the URL, `b_row`): the picker's reward is the
    DB's reward of the row shown, not the previous row's."""
    at = run_app("browser")
    page = find_frame(at, "seam", "hack_rate", "sample_id", "variant", "policy", "reward")
    seen = []
    for i in (0, 3, 1):
        r = page.iloc[i]
        at.query_params["b_row"] = "|".join([r["sample_id"], r["variant"], r["policy"], r["reward"]])
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        pick = [s for s in at.selectbox if (s.key or "").startswith("worse_pick")]
        assert len(pick) == 1, [s.key for s in at.selectbox]
        shown = float(re.search(r"reward (-?[\d.e+-]+)", pick[0].options[0]).group(1))
        top = _rewards(db, r["sample_id"], r["variant"], r["policy"], r["reward"])[0]
        assert abs(shown - top) < 5e-4 * max(1, abs(top)), f"row {i} ({r['sample_id']}): picker says {shown}, DB {top}"
        assert any(r["sample_id"] in t.value for t in at.text), f"detail of row {i} not shown"
        seen.append(shown)
    assert len(set(seen)) > 1, seen
    assert list(page.columns[:2]) == ["seam", "hack_rate"], f"SEAM and hack rate first: {list(page.columns)}"


# ------------------------------------------------------------------------------------------- item 2

@pytest.fixture(scope="module")
def tiny_db(synthetic_db, tmp_path_factory):
    """Every PM log-prob so low that exp(l) ≈ 3e-7: every SEAM is 0 or ~3e-7 (what small alpha gives)."""
    path = tmp_path_factory.mktemp("tiny") / "seam.duckdb"
    shutil.copy(synthetic_db(120, seed=5), path)
    with store.writer(path) as con:
        con.execute("UPDATE pm_scores SET logprob_mean = -15.0, logprob_sum = -15.0 * n_tokens")
        store.finalize(con)
    return path


ZEROS = re.compile(r"(?<![\d.])-?0\.0{2,}(?![\d])")


def _strings(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "text", "info", "warning", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(m.value) for m in at.metric]
    for d in at.dataframe:
        df = d.value
        for c in df.columns:
            if not pd.api.types.is_numeric_dtype(df[c]):
                out += [str(v) for v in df[c]]
    return out


@pytest.mark.parametrize("page", [None, "distributions", "browser", "export", "saturation"])
def test_every_number_formats_3e_7_readably(page, tiny_db, run_app, monkeypatch):
    """No '0.0000' (or '0.00') for a value of 3e-7 anywhere on the page, tables carry no fixed-decimal
    number format, and the value itself is shown ('3.06e-07')."""
    monkeypatch.setenv("SEAM_DB", str(tiny_db))
    at = run_app(page, **({"b_only": "true"} if page == "browser" else {}))
    strings = _strings(at)
    bad = [s for s in strings if ZEROS.search(s)]
    assert not bad, f"{page or 'overview'}: values shown as zeros: {bad[:5]}"
    fixed = [d.key for d in at.dataframe if re.search(r'"format":\s*"%\.\d+f"', d.proto.columns or "")]
    assert not fixed, f"{page or 'overview'}: tables with fixed-decimal formats: {fixed}"
    if page in (None, "distributions", "browser"):
        assert any(re.search(r"\d\.\d\de-0[6-9]", s) for s in strings), f"{page}: 3e-7 not shown: {strings[-40:]}"


def test_number_helper_keeps_significant_digits():
    from app import common
    assert common.num(3e-7) == "3.00e-07" and common.num(0.1234567) == "0.123" and common.num(12.345) == "12.3"
    assert common.num(0) == "0" and common.num(float("nan")) == "–" and common.num(1234.5) == "1234"
    assert common.ci_num(3e-7, 1e-7, 5e-7) == "3.00e-07 [1.00e-07, 5.00e-07]"
    assert common.pct(3e-7) != "0.0%" and "e-05" in common.pct(3e-7)


# ------------------------------------------------------------------------------------------- items 3, 5

def test_spotcheck_counts_by_screen_side_and_plans_honestly(run_app, find_frame, label_button, app_env):
    """Press A five times and B three times: the per-annotator table says A (left) = 5, B (right) = 3
    (stored labels are in canonical order, not screen order). After one label the planner assumes the
    worst rate its interval allows, not the 0% / 100% point estimate. The reveal puts A before B, formatted."""
    at = run_app("spotcheck", c_kind="dataset", c_variant="adv", c_n="20")
    assert any(t.key == "annotator" for t in at.text_input), "no annotator field before a name is given"
    at.text_input(key="annotator").set_value("alice").run()
    assert not any(t.key == "annotator" for t in at.text_input), \
        "the name field stays open after Enter: keyboard shortcuts would type into it"
    assert any("Labeling as" in m.value and "alice" in m.value for m in at.markdown)
    label_button(at, "a").click().run()
    mm = find_frame(at, "pairs", "RM", "n", "mismatch [95% CI]")
    need = [c for c in mm.columns if c.startswith("label more")][0]
    assert (mm[need] >= 250).all(), f"planner after 1 label: {list(mm[need])} (should plan for p near 0.5)"
    reveal = find_frame(at, "role", "model", "A (left)", "B (right)", "RM vs you")
    cols = list(reveal.columns)
    assert cols.index("A (left)") < cols.index("B (right)"), cols
    assert all(isinstance(v, str) and len(v) <= 10 for v in reveal["A (left)"]), list(reveal["A (left)"])
    for _ in range(4):
        label_button(at, "a").click().run()
    for _ in range(3):
        label_button(at, "b").click().run()
    per = find_frame(at, "annotator", "A (left)", "B (right)")
    row = per[per["annotator"] == "alice"].iloc[0]
    assert (row["A (left)"], row["B (right)"]) == (5, 3), per.to_dict("records")
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == 8


def test_planner_rate_is_the_worst_case_in_the_interval():
    assert labels_mod.planning_rate(0, 1) == 0.5 and labels_mod.planning_rate(0, 2) == 0.5
    assert labels_mod.planning_rate(0, 200) < 0.05  # many labels: the interval excludes 0.5
    assert labels_mod.labels_needed(labels_mod.planning_rate(0, 2), 0.05, 2) > 300


def test_stale_label_for_a_pair_no_longer_shown_is_ignored(run_app, label_button, app_env):
    """A click whose pair is no longer the current one (the button of the pair just labeled, delivered
    after it) records nothing: only the pair on screen can be labeled."""
    at = run_app("spotcheck", annotator="dora", c_kind="dataset", c_variant="adv", c_n="10")
    first = label_button(at, "a")
    stale_b = label_button(at, "b")
    first.click().run()
    key_now = label_button(at, "b").key
    assert key_now != stale_b.key, "the label buttons do not name their pair"
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        rows = con.execute("SELECT a_id, b_id, label FROM labels").fetchall()
    assert len(rows) == 1, rows
    assert f"{rows[0][0]}|{rows[0][1]}" in first.key, (rows, first.key)


# ------------------------------------------------------------------------------------------- item 9

@pytest.fixture()
def cut_db(synthetic_db, tmp_path):
    """Two PM samples per prompt; on half of the prompts one sample hit the token cap."""
    path = tmp_path / "cut.duckdb"
    shutil.copy(synthetic_db(60, seed=7), path)
    with store.writer(path) as con:
        con.execute("DELETE FROM responses WHERE variant = 'policy'")
        sids = [r[0] for r in con.execute("SELECT sample_id FROM samples ORDER BY sample_id LIMIT 20").fetchall()]
        rows = []
        for i, sid in enumerate(sids):
            for j in range(2):
                cut = j == 1 and i % 2 == 0
                prov = {"generator": "pm-sft-1k", "max_new_tokens": 32, "truncated": cut}
                rows.append((f"pol-{i}-{j}", sid, "policy", j, f"answer {i}.{j}" + (" and then" if cut else "."), prov))
        store.insert(con, "responses", rows)
    return path


def test_cut_off_responses_marked_and_left_out_by_default(cut_db, run_app, monkeypatch):
    monkeypatch.setenv("SEAM_DB", str(cut_db))
    at = run_app("spotcheck", annotator="eve", c_kind="policy", c_n="50")
    prog = [p for p in at.get("progress")]
    text = " ".join(str(p.proto.text) for p in prog)
    assert "of 10 pairs" in text, f"truncated pairs are in the default queue: {text}"
    assert not any("cut at" in w.value for w in at.warning)
    at = run_app("spotcheck", annotator="eve", c_kind="policy", c_n="50", c_cut="true")
    text = " ".join(str(p.proto.text) for p in at.get("progress"))
    assert "of 20 pairs" in text, text
    seen = 0
    for _ in range(4):  # the queue's order is hashed: label until a cut pair was on screen
        if any("cut at 32 tokens" in w.value for w in at.warning):
            seen += 1
        next(b for b in at.button if (b.key or "").startswith("lab_skip|")).click().run()
    assert seen, "no 'cut at 32 tokens' marker on a truncated response"


# ------------------------------------------------------------------------------------------- item 10

def test_short_model_names_in_dropdowns(run_app):
    from app import common
    refs = ["cache/models/demo-rm-a", "cache/models/demo-rm-b", "/abs/cache/models/demo-rm-a-large"]
    short = common.short_names(refs)
    assert short == {refs[0]: "demo-rm-a", refs[1]: "demo-rm-b", refs[2]: "demo-rm-a-large"}, short
    same_tail = ["x/a/model", "y/b/model"]
    assert common.short_names(same_tail) == {"x/a/model": "a/model", "y/b/model": "b/model"}
    at = run_app("browser")
    ms = at.multiselect(key="b_rm")
    assert ms.format_func is not None


def test_model_alias_shown_in_dropdowns(run_app, synthetic_db, tmp_path, monkeypatch):
    """`seam alias` stores a display name in `models`; the Mismatch browser's RM dropdown shows it (the other RM
    keeps its short name) and its help still gives the full reference."""
    from analysis.cli import main

    path = tmp_path / "aliased.duckdb"
    shutil.copy(synthetic_db(160, seed=11), path)
    assert main(["alias", "rm-100k", "Big RM", "--db", str(path)]) == 0
    monkeypatch.setenv("SEAM_DB", str(path))
    at = run_app("browser")
    ms = at.multiselect(key="b_rm")
    from app import common

    shown = list(ms.options)  # the labels the dropdown displays
    assert "Big RM" in shown and "rm-10k" in shown, f"RM dropdown shows {shown}, expected the alias 'Big RM'"
    assert common.md("Big RM = rm-100k") in (ms.help or ""), f"full reference not on hover: {ms.help!r}"


# ------------------------------------------------------------------------------------------- item 13

def test_not_selected_rows_are_not_rejects(tmp_path):
    """--fraction: malformed rows outside the fraction are 'not selected', like the samples left out; only
    malformed rows inside it are rejects, and the Overview shows both apart."""
    from analysis.pipeline.config import PrecomputeConfig
    from analysis.pipeline.precompute import Precompute
    from analysis.queries.overview import not_selected, reject_reasons

    src = tmp_path / "d.jsonl"
    lines = []
    for i in range(400):
        lines.append("{not json" if i % 4 == 0 else json.dumps({"prompt": f"q{i}", "chosen": f"good {i}",
                                                                "rejected": f"bad {i}"}))
    src.write_text("\n".join(lines) + "\n")
    db = tmp_path / "seam.duckdb"
    cfg = PrecomputeConfig(db=db, dataset=str(src), fraction=0.25, progress=False)
    Precompute(cfg, log=lambda _: None).ingest()
    con = duckdb.connect(str(db), read_only=True)
    try:
        n_s = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        n_r = con.execute("SELECT count(*) FROM rejects").fetchone()[0]
        ns = not_selected(con)
        rr = reject_reasons(con)
    finally:
        con.close()
    assert 40 < n_s < 110, n_s
    assert n_r < 50, f"{n_r} of 100 malformed rows reported as rejects in a 25% run"
    assert n_s + n_r + int(ns["n"].sum()) == 400, (n_s, n_r, ns.to_dict("records"))
    assert len(rr) == 1, f"one reason kind, one group: {rr.to_dict('records')}"


# ------------------------------------------------------------------------------------------- item 8

def test_adjudication_and_label_round_trip(run_app, find_frame, label_button, app_env):
    """Two annotators disagree on a pair: the Adjudicate tab lists it, a recorded final label settles it
    (and wins over the split vote), and labels survive export + import in all four formats."""
    q = dict(c_kind="dataset", c_variant="adv", c_n="10")
    at = run_app("spotcheck", annotator="alice", **q)
    label_button(at, "a").click().run()
    bob = run_app("spotcheck", annotator="bob", **q)
    label_button(bob, "b").click().run()
    bob = run_app("spotcheck", annotator="bob", **q)
    dis = find_frame(bob, "votes", "final", "a_id", "b_id")
    assert len(dis) == 1 and "alice" in dis["votes"].iloc[0] and "bob" in dis["votes"].iloc[0], dis
    bob.radio(key="adj_label").set_value("tie")
    bob.button(key="adj_save").click().run()
    assert not bob.exception, [e.value for e in bob.exception]
    store = labels_mod.LabelStore(app_env / "labels.sqlite")
    fin = store.finals()
    assert list(fin["label"]) == ["tie"] and list(fin["adjudicator"]) == ["bob"], fin
    cons = labels_mod.consensus(store.all(), fin)
    assert list(cons["label"]) == ["tie"], cons
    lab = store.all()
    for fmt in labels_mod.EXPORT_FORMATS:
        text = labels_mod.export_labels(lab, fmt, {lab["a_id"][0]: "text a"}, {})
        back = labels_mod.parse_labels(text, fmt)
        got = sorted(zip(back["a_id"], back["b_id"], back["annotator"], back["label"]))
        want = sorted(zip(lab["a_id"], lab["b_id"], lab["annotator"], lab["label"]))
        assert got == want, (fmt, got, want)
        other = labels_mod.LabelStore(app_env / f"import-{fmt}.sqlite")
        assert other.import_labels(back) == 2 and len(other.all()) == 2
    with pytest.raises(ValueError, match="entry 1"):
        labels_mod.parse_labels('[{"data": {"a_id": "x"}, "annotations": [{"completed_by": 1, "result": [{"value": {"choices": ["A"]}}]}]}]',
                                "labelstudio")
    dl = [b for b in bob.get("download_button") if b.key == "lab_download"]
    assert dl, "no download button for labels"


# ------------------------------------------------------------------------------------------- item 14

def test_why_does_the_rm_disagree_page(run_app, find_frame, db):
    """Per RM, each feature's mismatch rate with and without it matches a count in pandas; a feature from
    the URL (or a click) lists its pairs."""
    at = run_app("disagreement", w_rm="rm-10k")
    feats = find_frame(at, "feature", "pairs with it", "mismatch with [95% CI]", "mismatch without [95% CI]")
    con = duckdb.connect(str(db), read_only=True)
    try:
        df = con.execute("""SELECT length(w.text) >= 1.2 * length(g.text) AS longer, sw.score > sg.score AS mm
            FROM responses w JOIN responses g ON g.sample_id = w.sample_id AND g.variant = 'gold'
            JOIN rm_scores sw ON sw.response_id = w.response_id AND sw.reward = 'rm-10k'
            JOIN rm_scores sg ON sg.response_id = g.response_id AND sg.reward = 'rm-10k'
            WHERE w.variant NOT IN ('gold', 'policy')""").df()
    finally:
        con.close()
    row = feats[feats["feature"].str.startswith("worse response ≥ 20% longer")].iloc[0]
    n_with = int(df["longer"].sum())
    assert row["pairs with it"] == n_with, (row.to_dict(), n_with)
    rate = df.loc[df["longer"], "mm"].mean()
    assert row["mismatch with [95% CI]"].startswith(f"{100 * rate:.1f}%"), (row["mismatch with [95% CI]"], rate)
    at = run_app("disagreement", w_rm="rm-10k", w_feat="longer", w_only="false")
    pairs = find_frame(at, "prompt", "variant", "r_w", "r_g", "mismatch", "sample_id")
    assert 0 < len(pairs) <= 50


# ------------------------------------------------------------------------------------------- item 15

def test_prompt_map_topics_with_terms_and_intervals(run_app, find_frame, db):
    """Topic clusters on the map: k rows, each with top terms that occur in its prompts, a mismatch rate
    that matches the cluster's samples, and intervals; a shared link with m_sel shows the same selection."""
    from analysis.queries import prompt_map as pm
    at = run_app("prompt_map", m_k="5")
    topics = find_frame(at, "topic", "top terms", "prompts", "mismatch [95% CI]", "mean SEAM [95% CI]")
    assert len(topics) == 5 and topics["prompts"].sum() > 0, topics
    assert all(t for t in topics["top terms"]), topics["top terms"].tolist()
    assert all("[" in v for v in topics["mismatch [95% CI]"]) and all("[" in v for v in topics["mean SEAM [95% CI]"])
    con = duckdb.connect(str(db), read_only=True)
    try:
        assign, clusters, _ = pm.prompt_clusters(con, k=5, variant="adv", policy="pm-sft-1k", reward="rm-10k")
        c0 = assign[assign["cluster"] == 0]["sample_id"].tolist()
        prompts = con.execute("SELECT lower(prompt) FROM samples WHERE list_contains(?, sample_id)", [c0]).fetchall()
    finally:
        con.close()
    for term in clusters["terms"].iloc[0].split(", "):
        assert any(term in p[0] for p in prompts), f"top term {term!r} not in cluster 0's prompts"
    assert pm.ctfidf_terms(["apple apple banana", "car car engine"], top=2) == [["apple", "banana"], ["car", "engine"]]
    sel = ",".join(c0[:3])
    at = run_app("prompt_map", m_sel=sel)
    shown = find_frame(at, "sample_id", "seam", "hack_rate", "mismatch", "prompt")
    assert sorted(shown["sample_id"]) == sorted(c0[:3]), shown["sample_id"].tolist()


def test_distributions_offer_a_log_axis(run_app):
    at = run_app("distributions", d_log="true")
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["layout"]["xaxis"].get("type") == "log", fig["layout"].get("xaxis")
    at = run_app("distributions", d_log="true", d_plot="box")
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["layout"]["yaxis"].get("type") == "log", fig["layout"].get("yaxis")
