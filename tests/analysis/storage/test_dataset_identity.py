"""A sample's identity includes its dataset: the same rows under a second name are stored, not dropped;
a DB written when ids were hash(prompt, gold) opens in place and keeps its rows, ids and labels."""

import json

import duckdb

from analysis.data.ingest import content_id, open_records, parse_records, response_id, Sample
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.precompute import run_precompute
from analysis.storage import store
from analysis.storage.labels import LabelStore, default_path

ROWS = [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(9)]


def _data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _run(db, dataset, name=None):
    cfg = PrecomputeConfig(dataset=str(dataset), dataset_name=name, db=db, variants=["rejected"], umap=False,
                           progress=False)
    return run_precompute(cfg, log=lambda m: None)


def _counts(db):
    con = store.connect(db)
    try:
        per = dict(con.execute("SELECT dataset, count(*) FROM samples GROUP BY ALL").fetchall())
        return per, con.execute("SELECT count(*) FROM responses").fetchone()[0]
    finally:
        con.close()


def test_same_file_under_two_names_gets_its_samples_and_reruns_add_nothing(tmp_path):
    data, db = _data(tmp_path), tmp_path / "s.duckdb"
    _run(db, data, "A")
    _run(db, data, "B")
    per, responses = _counts(db)
    assert per == {"A": 9, "B": 9}, f"samples per dataset: {per} (B used to get 0)"
    _run(db, data, "A")
    _run(db, data, "B")
    assert _counts(db) == (per, responses), "rerunning with the same names added rows"


def _old_db(db, dataset, name):
    """A DB as the previous version wrote it: no seam_meta, sample_id = hash(prompt, gold)."""
    con = duckdb.connect(str(db))
    for f in store.SQL_FILES:
        con.execute(store._sql(f))
    con.execute("DROP TABLE seam_meta")
    samples, responses = [], []
    for item in parse_records(open_records(str(dataset)), dataset=name):
        assert isinstance(item, Sample)
        sid = content_id("sample", item.prompt, item.gold)  # the old id function
        samples.append((sid, name, item.source_row, None, item.prompt, item.gold, item.rejected, "{}"))
        responses.append((response_id(sid, "gold", item.gold), sid, "gold", 0, item.gold, "{}"))
        responses.append((response_id(sid, "rejected", item.rejected), sid, "rejected", 0, item.rejected, "{}"))
    con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", samples)
    con.executemany("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)", responses)
    con.execute("INSERT INTO datasets (dataset, format, source) VALUES (?, 'trl', ?)", [name, str(dataset)])
    con.close()
    return [s[0] for s in samples], responses


def test_old_db_is_migrated_in_place_keeping_rows_ids_and_labels(tmp_path):
    data, db = _data(tmp_path), tmp_path / "old.duckdb"
    old_ids, responses = _old_db(db, data, str(data))
    labels = LabelStore(default_path(db))
    gold_rid, rej_rid = responses[0][0], responses[1][0]
    labels.put(gold_rid, rej_rid, "ann", "a", kind="dataset", sample_id=old_ids[0])

    _run(db, data)  # the same command as before the upgrade: must add nothing
    per, n_resp = _counts(db)
    assert per == {str(data): 9} and n_resp == len(responses), (
        f"rerun on the migrated DB changed rows: samples {per}, responses {n_resp} (was {len(responses)})")
    con = store.connect(db)
    ids = {r[0] for r in con.execute("SELECT sample_id FROM samples").fetchall()}
    labelled = con.execute("SELECT count(*) FROM responses WHERE response_id IN (?, ?)", [gold_rid, rej_rid]).fetchone()[0]
    con.close()
    assert ids == set(old_ids), "existing rows lost their ids"
    assert labelled == 2 and len(labels.all()) == 1, "the label no longer points at stored responses"

    _run(db, data, "copy")  # a second dataset with the same content now gets its samples
    per, _ = _counts(db)
    assert per == {str(data): 9, "copy": 9}, f"samples per dataset after adding 'copy': {per}"
    _run(db, data, "copy")
    _run(db, data)
    assert _counts(db)[0] == per, "reruns after the migration added rows"
