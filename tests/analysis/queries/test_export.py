"""Curated-subset export: what is written (TRL rows, dataset card), in which formats, how hand labels are
applied — and that no user-given name can make it write outside the export folder."""

from __future__ import annotations

import json
import os

import duckdb
import pandas as pd
import pytest

from analysis.queries import export as E
from analysis.queries import filtering
from analysis.storage import store


@pytest.fixture(scope="module")
def db(synthetic_db):
    return synthetic_db(120, seed=4)


SPEC = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", mode="top", q=0.25)
HAND = filtering.FilterSpec(variant="rejected", policy="pm-hand", reward="rm-hand", mode="top", q=0.0)


def snapshot(root) -> set:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/tmp/abs", "a/../../b", "..\\..\\win", "~/home",
                                  "name\x00null", ".hidden", "-dash", "ok name!*?"])
def test_names_cannot_escape_the_export_folder(db, tmp_path, name):
    exports = tmp_path / "box" / "exports"
    before = snapshot(tmp_path)
    try:
        res = E.export_subset(db, exports, name, SPEC)
    except E.ExportError:
        assert snapshot(tmp_path) == before
        return
    assert res.path.parent == exports.resolve()
    assert not res.path.name.startswith(".") and "/" not in res.path.name and "\\" not in res.path.name
    new = snapshot(tmp_path) - before
    assert new and all(p.startswith(str(exports.resolve()) + os.sep) for p in new)


@pytest.mark.parametrize("name", ["..", "...", "", "   ", "/", "../", "\x00"])
def test_unusable_names_are_refused(db, tmp_path, name):
    with pytest.raises(E.ExportError):
        E.export_subset(db, tmp_path / "exports", name, SPEC)
    assert not any((tmp_path / "exports").iterdir()) if (tmp_path / "exports").exists() else True


def test_symlink_inside_the_folder_cannot_redirect(db, tmp_path):
    exports = tmp_path / "exports"
    outside = tmp_path / "outside"
    exports.mkdir()
    outside.mkdir()
    (exports / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(E.ExportError):
        E.export_subset(db, exports, "evil", SPEC, overwrite=True)
    assert list(outside.iterdir()) == []


def test_jsonl_rows_and_card(db, tmp_path):
    res = E.export_subset(db, tmp_path / "exports", "top25", SPEC, keep="kept", fmt="jsonl")
    rows = [json.loads(line) for line in (res.path / "data.jsonl").read_text().splitlines()]
    card = json.loads((res.path / "card.json").read_text())
    assert len(rows) == res.n == card["n"] == 90  # 120 samples, top 25% (30) dropped
    assert card["filter"]["mode"] == "top" and card["filter"]["q"] == 0.25 and card["variant"] == "adv"
    assert card["models"] == {"policy": "pm-sft-1k", "reward": "rm-10k"} and card["subset"] == "kept"
    assert card["source_db"] == str(db.resolve()) and card["thresholds"]["n_dropped"] == 30
    readme = (res.path / "README.md").read_text()
    assert "**Rows**: 90" in readme and "pm-sft-1k" in readme
    con = duckdb.connect(str(db), read_only=True)
    try:
        r = rows[0]
        gold = con.execute("SELECT gold, prompt FROM samples WHERE sample_id = ?", [r["sample_id"]]).fetchall()[0]
        assert (r["chosen"], r["prompt"]) == gold
        worst = con.execute("""SELECT r.text FROM responses r JOIN rm_scores s USING (response_id)
                               WHERE r.sample_id = ? AND r.variant = 'adv' AND s.reward = 'rm-10k'
                               ORDER BY s.score DESC LIMIT 1""", [r["sample_id"]]).fetchall()[0][0]
        assert r["rejected"] == worst  # 'hardest': the worse response the RM likes most
        kept = {x["sample_id"] for x in rows}
        top = {x[0] for x in con.execute("""SELECT sample_id FROM seam_metrics WHERE variant = 'adv'
                AND policy = 'pm-sft-1k' AND reward = 'rm-10k' ORDER BY seam DESC, sample_id LIMIT 30""").fetchall()}
        assert not kept & top and len(kept | top) == 120
    finally:
        con.close()


def test_parquet_and_hf_formats(db, tmp_path):
    pq = E.export_subset(db, tmp_path / "exports", "p", SPEC, keep="dropped", fmt="parquet", include_ids=False)
    df = pd.read_parquet(pq.path / "data.parquet")
    assert list(df.columns) == ["prompt", "chosen", "rejected"] and len(df) == 30
    hf = E.export_subset(db, tmp_path / "exports", "h", SPEC, fmt="hf", rejected="each")
    import datasets
    ds = datasets.load_from_disk(str(hf.path / "hf"))
    assert len(ds) == hf.n == 90 * 4 and {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    assert sorted(p.name for p in hf.path.iterdir()) == ["README.md", "card.json", "hf"]


def test_labels_drop_or_flip_contradicted_pairs(db, tmp_path):
    # people say the dataset is wrong on hand-03 (the "worse" answer is better) and call hand-04 a tie
    labels = pd.DataFrame({"a_id": ["hand-03-gold", "hand-04-gold", "hand-05-gold"],
                           "b_id": ["hand-03-rejected", "hand-04-rejected", "hand-05-rejected"],
                           "label": ["b", "tie", "a"]})
    ign = E.export_subset(db, tmp_path / "e", "ignore", HAND, labels=labels, label_policy="ignore")
    drop = E.export_subset(db, tmp_path / "e", "drop", HAND, labels=labels, label_policy="drop")
    flip = E.export_subset(db, tmp_path / "e", "flip", HAND, labels=labels, label_policy="flip")
    assert (ign.n, drop.n, flip.n) == (10, 8, 9)
    assert drop.card["labels"] == {"policy": "drop", "pairs_before_labels": 10, "labeled": 3,
                                   "contradicted_by_label": 1, "label_ties": 1}
    rows = {r["sample_id"]: r for r in map(json.loads, (flip.path / "data.jsonl").read_text().splitlines())}
    assert rows["hand-03"]["chosen"] == "Hand worse answer 3." and rows["hand-03"]["flipped"] is True
    assert rows["hand-05"]["chosen"] == "Hand gold answer 5." and "hand-04" not in rows


def test_existing_export_needs_overwrite_and_db_is_untouched(db, tmp_path):
    mtime = db.stat().st_mtime_ns
    E.export_subset(db, tmp_path / "e", "same", SPEC)
    with pytest.raises(E.ExportError, match="already exists"):
        E.export_subset(db, tmp_path / "e", "same", SPEC)
    res = E.export_subset(db, tmp_path / "e", "same", SPEC, keep="dropped", overwrite=True)
    assert res.n == 30 and json.loads((res.path / "card.json").read_text())["subset"] == "dropped"
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["same"]  # no staging / trash left behind
    assert db.stat().st_mtime_ns == mtime


def test_empty_selection_is_refused(db, tmp_path):
    spec = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", q=1.0)
    with pytest.raises(E.ExportError, match="empty"):
        E.export_subset(db, tmp_path / "e", "nothing", spec)
    assert not any((tmp_path / "e").iterdir())


def test_selection_restricts_the_universe(db, tmp_path):
    con = store.connect(db, read_only=True)
    ids = tuple(r[0] for r in con.execute("SELECT sample_id FROM samples WHERE dataset <> 'hand' "
                                          "ORDER BY sample_id LIMIT 10").fetchall())
    con.close()
    spec = filtering.FilterSpec(variant="adv", policy="pm-sft-1k", reward="rm-10k", q=0.2, sample_ids=ids)
    res = E.export_subset(db, tmp_path / "e", "sel", spec)
    assert res.n == 8 and res.card["filter"]["restricted_to_selection"] == 10
