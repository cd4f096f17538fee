"""Hand labels: durable the moment they are given (reopen, crash, concurrent writers), keyed by content
ids, and the statistics on them (consensus, Cohen's kappa, Wilson planner) checked on hand values."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from analysis.storage import labels as L
from analysis.stats.metrics import wilson


def test_put_canonicalises_and_overwrites(tmp_path):
    s = L.LabelStore(tmp_path / "l.sqlite")
    s.put("r-b", "r-a", "alice", "a", kind="policy", sample_id="s1", shown_left="r-b")  # r-b better
    df = s.all()
    assert df.loc[0, ["a_id", "b_id", "label"]].tolist() == ["r-a", "r-b", "b"]
    s.put("r-a", "r-b", "alice", "tie")
    assert s.all()["label"].tolist() == ["tie"] and len(s.all()) == 1
    s.put("r-a", "r-b", "bob", "skip")
    assert s.labeled_pairs("alice") == {("r-a", "r-b")} and s.annotators() == ["alice", "bob"]
    s.delete("r-b", "r-a", "alice")
    assert s.labeled_pairs("alice") == set()
    with sqlite3.connect(tmp_path / "l.sqlite") as con:
        hist = con.execute("SELECT label FROM label_history ORDER BY rowid").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert [h[0] for h in hist] == ["b", "tie", "skip", "deleted"] and mode == "wal"


def test_annotator_name_is_normalised_by_every_method(tmp_path):
    """Undo after labeling as 'alice ' (trailing space, as typed) must remove the label: put stripped the
    name but delete did not, so the DELETE matched no row."""
    s = L.LabelStore(tmp_path / "l.sqlite")
    s.put("r-a", "r-b", " alice ", "a")
    assert s.labeled_pairs("alice ") == {("r-a", "r-b")}, s.all()
    s.delete("r-a", "r-b", "alice ")
    assert s.all().empty, f"undo as 'alice ' left the label in place: {s.all().to_dict('records')}"
    with pytest.raises(ValueError, match="annotator"):
        s.delete("r-a", "r-b", "  ")


def test_rejects_bad_input(tmp_path):
    s = L.LabelStore(tmp_path / "l.sqlite")
    with pytest.raises(ValueError):
        s.put("a", "b", "alice", "maybe")
    with pytest.raises(ValueError):
        s.put("a", "a", "alice", "a")
    with pytest.raises(ValueError):
        s.put("a", "b", "  ", "a")


def test_labels_survive_reopen(tmp_path):
    path = tmp_path / "l.sqlite"
    L.LabelStore(path).put("x1", "x2", "alice", "a", kind="dataset")
    again = L.LabelStore(path).all()
    assert again[["a_id", "b_id", "annotator", "label", "kind"]].values.tolist() == [["x1", "x2", "alice", "a", "dataset"]]


def test_label_survives_a_crash_right_after_it_was_given(tmp_path):
    """The process is SIGKILLed immediately after put() returns (no close, no atexit): the label is on disk."""
    path = tmp_path / "l.sqlite"
    code = textwrap.dedent(f"""
        import os, signal
        from analysis.storage.labels import LabelStore
        s = LabelStore({str(path)!r})
        for i in range(5):
            s.put(f"a{{i}}", f"b{{i}}", "alice", "a")
        print("written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and "written" in proc.stdout
    assert len(L.LabelStore(path).all()) == 5


def test_concurrent_writers(tmp_path):
    path = tmp_path / "l.sqlite"
    L.LabelStore(path)
    code = textwrap.dedent(f"""
        import sys
        from analysis.storage.labels import LabelStore
        s = LabelStore({str(path)!r})
        who = sys.argv[1]
        for i in range(40):
            s.put(f"a{{i:03d}}", f"b{{i:03d}}", who, "a" if i % 2 else "b")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, who]) for who in ("alice", "bob", "carol")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    df = L.LabelStore(path).all()
    assert len(df) == 120 and df.groupby("annotator").size().tolist() == [40, 40, 40]


def test_consensus_majority_and_splits():
    lab = pd.DataFrame([
        ("a", "b", "u1", "a", "policy", "s"), ("a", "b", "u2", "a", "policy", "s"), ("a", "b", "u3", "b", "policy", "s"),
        ("c", "d", "u1", "a", "policy", "t"), ("c", "d", "u2", "b", "policy", "t"),              # split: no consensus
        ("e", "f", "u1", "skip", "dataset", "v"), ("e", "f", "u2", "tie", "dataset", "v"),      # skip ignored
    ], columns=["a_id", "b_id", "annotator", "label", "kind", "sample_id"])
    c = L.consensus(lab)
    assert c[["a_id", "label", "n_annotators"]].values.tolist() == [["a", "a", 3], ["e", "tie", 1]]
    assert c.attrs["n_split"] == 1


def test_cohen_kappa_hand_value():
    x = ["a", "a", "b", "b", "tie", "a"]
    y = ["a", "b", "b", "b", "tie", "a"]
    # po = 5/6, pe = (3*2 + 2*3 + 1*1) / 36 = 13/36 -> kappa = (30 - 13) / (36 - 13) = 17/23
    assert L.cohen_kappa(x, y) == pytest.approx(17 / 23)
    from sklearn.metrics import cohen_kappa_score
    assert L.cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    assert L.cohen_kappa(["a", "a"], ["a", "a"]) == 1.0 and math.isnan(L.cohen_kappa([], []))


def test_kappa_table_on_shared_pairs():
    rows = []
    for i, (x, y) in enumerate(zip(["a", "a", "b", "b", "tie", "a"], ["a", "b", "b", "b", "tie", "a"])):
        rows += [(f"p{i}", f"q{i}", "alice", x), (f"p{i}", f"q{i}", "bob", y)]
    rows += [("only", "alice", "alice", "a"), ("p0", "q0", "carol", "skip")]
    lab = pd.DataFrame(rows, columns=["a_id", "b_id", "annotator", "label"])
    kt = L.kappa_table(lab)
    ab = kt[(kt.annotator_1 == "alice") & (kt.annotator_2 == "bob")].iloc[0]
    assert ab.n_shared == 6 and ab.kappa == pytest.approx(17 / 23) and ab.agreement == pytest.approx(5 / 6)
    assert "carol" not in set(kt.annotator_1) | set(kt.annotator_2)  # only skips: nothing to compare


def test_sample_size_planner():
    need = L.labels_needed(0.35, 0.05)
    assert L.wilson_half_width(0.35, need) <= 0.05 < L.wilson_half_width(0.35, need - 1)
    assert abs(need - 1.96 ** 2 * 0.35 * 0.65 / 0.05 ** 2) < 10  # close to the Wald rule of thumb (~350)
    assert L.labels_needed(0.35, 0.05, n_now=100) == need - 100
    assert L.labels_needed(0.35, 0.05, n_now=10_000) == 0
    assert L.labels_needed(None, 0.05) == L.labels_needed(0.5, 0.05)
    w = wilson(0.35 * need, need)
    lo, hi = w.lo, w.hi
    assert (hi - lo) / 2 <= 0.05


def test_default_path_next_to_db(tmp_path):
    assert L.default_path(tmp_path / "cache" / "seam.duckdb") == tmp_path / "cache" / "seam.labels.sqlite"
    os.makedirs(tmp_path / "cache", exist_ok=True)
