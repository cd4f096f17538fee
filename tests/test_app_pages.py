"""AppTest of every dashboard page on a small real DuckDB file (synthetic + hand rows + one sample whose
text is hostile Markdown/HTML): pages render without exceptions, show the numbers the queries compute,
keep their filters in the URL, write labels and exports where they should — and render data as text."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.storage import store
from analysis.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert('x')</script> **bold** [link](http://evil.example) <img src=x onerror=alert(1)>"




@pytest.fixture(scope="module")
def db(synthetic_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("pages") / "seam.duckdb"
    shutil.copy(synthetic_db(160, seed=11), path)
    with store.writer(path) as con:  # a sample whose text tries to be markup
        store.insert(con, "samples", [("evil", "hand", 99, "hand", EVIL, EVIL + " gold", None, {})])
        store.insert(con, "responses", [("evil-gold", "evil", "gold", 0, EVIL + " gold", {}),
                                        ("evil-rej", "evil", "rejected", 0, EVIL + " worse", {"source": "hand"})])
        store.insert(con, "pm_scores", [("evil-gold", "pm-hand", -5.0, 10, -0.5), ("evil-rej", "pm-hand", -1.0, 10, -0.1)])
        store.insert(con, "rm_scores", [("evil-gold", "rm-hand", 0.0), ("evil-rej", "rm-hand", 1.0)])
        store.finalize(con)
    return path




# ------------------------------------------------------------------------------------------- saturation

def test_saturation_sources_and_drilldown(run_app, find_frame):
    at = run_app("saturation")
    assert at.radio(key="s_src").options == ["imported RLHF results", "proxy from scores"]
    assert len(at.get("plotly_chart")) >= 3
    drivers = find_frame(at, "sample_id", "seam", "hack_rate", "prompt")
    assert 0 < len(drivers) <= 10 and drivers["seam"].is_monotonic_decreasing
    axis = find_frame(at, "model", "role", "quality [95% CI]")
    assert set(axis["role"]) == {"policy", "reward"}
    at.radio(key="s_src").set_value("proxy from scores").run()
    assert not at.exception and any("built-in proxy" in i.value for i in at.info)
    at.selectbox(key="s_cpm").set_value("pm-sft-10k").run()
    assert any("PM pm-sft-10k" in t.value for t in at.text)
    at = run_app("saturation", s_cpm="pm-sft-10k", s_crm="rm-100k")  # a shared link opens the same cell
    assert any("PM pm-sft-10k  ×  RM rm-100k" in t.value for t in at.text)


def test_saturation_without_rlhf_results(run_app, tmp_path, monkeypatch):
    path = synthetic.make_synthetic_db(tmp_path / "norlhf.duckdb", 40, seed=12)
    with store.writer(path) as con:
        con.execute("DROP TABLE rlhf_results")
    monkeypatch.setenv("SEAM_DB", str(path))
    at = run_app("saturation")
    assert at.radio(key="s_src").options == ["proxy from scores"]
    assert any("seam import-rlhf" in i.value for i in at.info)


# ------------------------------------------------------------------------------------------- distributions

def test_distributions_all_plots_and_definitions(run_app, find_frame):
    at = run_app("distributions")
    summ = find_frame(at, "variant", "PM", "RM", "mean [95% CI]")
    assert set(summ["variant"]) == {"adv", "contrast", "rejected"} and (summ["n"] == 160).all()
    for kind in ("ECDF", "box", "violin", "histogram"):
        at.segmented_control(key="d_plot").set_value(kind).run()
        assert not at.exception, kind
    at.slider(key="d_alpha").set_value(0.5).run()
    at.toggle(key="d_soft").set_value(True).run()
    assert not at.exception
    summ2 = find_frame(at, "variant", "PM", "RM", "mean [95% CI]")
    assert list(summ2["mean [95% CI]"]) != list(summ["mean [95% CI]"])
    assert any("soft hacking, tau = 1" in c.value for c in at.caption)


def test_distribution_filters_come_from_the_url(run_app, find_frame):
    at = run_app("distributions", d_variant=["adv"], d_pm=["pm-sft-10k"], d_rm=["rm-100k"], d_plot="ECDF")
    summ = find_frame(at, "variant", "PM", "RM", "mean [95% CI]")
    assert summ[["variant", "PM", "RM"]].values.tolist() == [["adv", "pm-sft-10k", "rm-100k"]]
    assert at.segmented_control(key="d_plot").value == "ECDF"


# ------------------------------------------------------------------------------------------- browser

def test_browser_filters_search_and_detail(run_app, find_frame):
    at = run_app("browser", b_ds=["hand"], b_rm=["rm-hand"], b_pm=["pm-hand"])
    rows = find_frame(at, "prompt", "variant", "seam", "sample_id")
    assert set(rows["sample_id"]) == {"hand-07", "hand-08", "hand-09", "evil"}  # the RM prefers the worse answer
    assert rows["seam"].is_monotonic_decreasing
    assert any(c.value.startswith("4 matching rows") for c in at.caption)
    # detail of the first row (highest SEAM): evil, 0.905 = exp(-0.1)
    texts = [t.value for t in at.text]
    assert EVIL in texts and any(EVIL + " worse" == t for t in texts)   # shown literally, as text
    assert any("{+worse+}" in c.value or "[-gold-]" in c.value for c in at.code)  # word diff
    at.text_input(key="b_q").set_value("hand prompt 8").run()
    rows = find_frame(at, "prompt", "variant", "seam", "sample_id")
    assert list(rows["sample_id"]) == ["hand-08"]
    at.toggle(key="b_re").set_value(True)
    at.text_input(key="b_q").set_value("(unclosed").run()
    assert not at.exception and any("invalid regular expression" in e.value for e in at.error)


def test_browser_label_mode(run_app, find_frame, app_env):
    at = run_app("browser", b_mode="RM vs hand labels")
    assert any("No hand labels yet" in i.value for i in at.info)
    from analysis.storage.labels import LabelStore
    LabelStore(app_env / "labels.sqlite").put("hand-01-gold", "hand-01-rejected", "alice", "b", kind="dataset")
    at = run_app("browser", b_mode="RM vs hand labels", b_lrm="rm-hand")
    dis = find_frame(at, "sample_id", "label", "score_a", "score_b")
    assert dis["sample_id"].tolist() == ["hand-01"]


# ------------------------------------------------------------------------------------------- spot-check

def test_spotcheck_labels_are_written_and_revealed(run_app, find_frame, app_env, label_button):
    at = run_app("spotcheck")
    assert any("Enter your name" in i.value for i in at.info)
    at.text_input(key="annotator").set_value("alice").run()
    prompt_before = at.text[0].value
    label_button(at, "a").click().run()
    assert not at.exception
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        rows = con.execute("SELECT annotator, label, kind, shown_left, a_id, b_id FROM labels").fetchall()
    assert len(rows) == 1 and rows[0][0] == "alice" and rows[0][2] == "policy"
    ann, label, _, left, a_id, b_id = rows[0]
    assert label == ("a" if left == a_id else "b")  # "A is better" = the left response
    assert any("1 of 50 pairs" in str(p.proto) for p in at.get("progress"))
    reveal = find_frame(at, "role", "model", "A (left)", "B (right)", "RM vs you")
    assert set(reveal["RM vs you"]) <= {"", "agrees", "MISMATCH", "RM tie"} and len(reveal) == 4
    assert at.text[0].value != prompt_before or at.text[1].value  # the next pair is up
    mm = find_frame(at, "pairs", "RM", "n", "mismatch [95% CI]")
    assert (mm["n"] == 1).all()
    at.button(key="undo").click().run()
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == 0


def test_spotcheck_undo_with_trailing_space_in_name(run_app, app_env, label_button):
    at = run_app("spotcheck", annotator="carol ", c_kind="dataset", c_variant="adv", c_n="10")
    label_button(at, "a").click().run()
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        assert con.execute("SELECT annotator FROM labels").fetchall() == [("carol",)]
    at.button(key="undo").click().run()
    with sqlite3.connect(app_env / "labels.sqlite") as con:
        left = con.execute("SELECT annotator, label FROM labels").fetchall()
    assert left == [], f"Undo as 'carol ' did not remove the label: {left}"


def test_spotcheck_resumes_and_measures_agreement(run_app, find_frame, label_button):
    at = run_app("spotcheck", annotator="alice", c_kind="dataset", c_variant="adv", c_n="10")
    for key in ("lab_a", "lab_b", "lab_tie"):
        label_button(at, key[4:]).click().run()
    # a fresh session (e.g. after a restart) continues with the 4th pair of the same queue
    at2 = run_app("spotcheck", annotator="alice", c_kind="dataset", c_variant="adv", c_n="10")
    assert any("3 of 10" in str(p.proto) for p in at2.get("progress"))
    bob = run_app("spotcheck", annotator="bob", c_kind="dataset", c_variant="adv", c_n="10")
    for key in ("lab_a", "lab_b", "lab_b"):
        label_button(bob, key[4:]).click().run()
    kt = find_frame(bob, "annotator_1", "annotator_2", "n_shared", "kappa")
    assert kt.iloc[0]["n_shared"] == 3
    planner = find_frame(bob, "pairs", "RM", "mismatch [95% CI]")
    assert any(c.startswith("label more for") for c in planner.columns)


# ------------------------------------------------------------------------------------------- export

def test_export_page_filters_and_writes_inside_the_folder(run_app, find_frame, app_env):
    at = run_app("export", e_q="20", e_variant="adv")
    summ = find_frame(at, "group", "n")
    assert summ.set_index("group")["n"].to_dict() == {"all": 160, "kept": 128, "dropped": 32}
    at.text_input(key="exp_name").set_value("../../escape")
    at.radio(key="exp_fmt").set_value("parquet")
    submit = [b for b in at.button if b.proto.label == "Export"][0]
    submit.click().run()
    assert not at.exception and any("Exported 128 pairs" in s.value for s in at.success)
    out = app_env / "exports" / "escape"
    card = json.loads((out / "card.json").read_text())
    assert card["n"] == 128 and card["format"] == "parquet" and (out / "data.parquet").exists()
    assert not (app_env / "escape").exists() and not (app_env.parent / "escape").exists()
    submit = [b for b in at.button if b.proto.label == "Export"][0]
    submit.click().run()
    assert any("already exists" in e.value for e in at.error)


# ------------------------------------------------------------------------------------------- prompt map

def test_prompt_map(run_app):
    at = run_app("prompt_map", m_max="2000")
    assert any("160 of 160 prompts shown" in c.value for c in at.caption)
    assert any("Nothing selected" in c.value for c in at.caption)


def test_prompt_map_missing(run_app, tmp_path, monkeypatch):
    path = synthetic.make_synthetic_db(tmp_path / "nomap.duckdb", 30, seed=13)
    with store.writer(path) as con:
        con.execute("DELETE FROM prompt_map")
    monkeypatch.setenv("SEAM_DB", str(path))
    at = run_app("prompt_map")
    assert any("No prompt map" in i.value for i in at.info)


def test_selection_travels_to_browser_and_export(find_frame, app_env, app_main):
    at = AppTest.from_file(app_main, default_timeout=90)
    at.session_state["selection"] = {"ids": ["hand-07", "hand-08", "evil"], "origin": "prompt map (test)"}
    at.run()
    at.query_params.update({"b_only": "false"})
    at.switch_page("views/browser.py").run()
    rows = find_frame(at, "prompt", "sample_id")
    assert set(rows["sample_id"]) <= {"hand-07", "hand-08", "evil"} and len(rows) > 0
    at.query_params.update({"e_variant": "rejected", "e_pm": "pm-hand", "e_rm": "rm-hand", "e_q": "0"})
    at.switch_page("views/export.py").run()
    assert at.toggle(key="use_sel").value is True
    summ = find_frame(at, "group", "n").set_index("group")["n"]
    assert summ["all"] == 3  # the universe is the selection
    at.toggle(key="use_sel").set_value(False).run()
    assert find_frame(at, "group", "n").set_index("group")["n"]["all"] == 11


# ------------------------------------------------------------------------------------------- safety

def test_no_page_renders_data_as_html():
    src = "\n".join(p.read_text() for p in (ROOT / "app").rglob("*.py"))
    assert "unsafe_allow_html=True" not in src and "st.html(" not in src and "components.html" not in src
