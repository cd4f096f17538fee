"""The DuckDB store: idempotent inserts, short write sessions, RLHF import."""

import subprocess
import sys
import textwrap

import pytest

from analysis.storage import store


def _sample(i):
    return dict(sample_id=f"s{i}", dataset="d", source_row=i, source="x", prompt=f"q{i}", gold=f"a{i}",
                rejected=None, meta={"i": i})


def test_insert_or_ignore_is_idempotent(tmp_path):
    db = tmp_path / "s.duckdb"
    for _ in range(2):
        with store.writer(db) as con:
            store.insert(con, "samples", [_sample(i) for i in range(5)])
            store.insert(con, "rejects", [{"dataset": "d", "source_row": 9, "reason": "empty chosen", "raw": "{}"}])
    con = store.connect(db)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 5
    assert con.execute("SELECT reason FROM rejects").fetchall() == [("empty chosen",)]
    assert con.execute("SELECT meta->>'i' FROM samples WHERE sample_id = 's3'").fetchone()[0] == "3"
    con.close()


def test_writer_rolls_back_on_error(tmp_path):
    db = tmp_path / "s.duckdb"
    with pytest.raises(RuntimeError):
        with store.writer(db) as con:
            store.insert(con, "samples", [_sample(1)])
            raise RuntimeError("killed mid-unit")
    con = store.connect(db)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    con.close()


def test_reader_waits_for_writer_in_other_process(tmp_path):
    """A reader retries while another process holds the write lock, then sees the committed data."""
    db = tmp_path / "s.duckdb"
    with store.writer(db) as con:
        store.insert(con, "samples", [_sample(0)])
    code = textwrap.dedent(f"""
        import time
        from analysis.storage import store
        with store.writer({str(db)!r}) as con:
            print("locked", flush=True)
            store.insert(con, "samples", [dict(sample_id="s1", dataset="d", source_row=1, source=None,
                         prompt="q", gold="a", rejected=None, meta={{}})])
            time.sleep(1.5)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    con = store.connect(db, timeout_s=20)
    try:
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    finally:
        con.close()
        proc.wait()


def test_missing_db_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="seam precompute"):
        store.connect(tmp_path / "nope.duckdb")


def test_import_rlhf_csv(tmp_path):
    db = tmp_path / "s.duckdb"
    csv = tmp_path / "runs.csv"
    csv.write_text("pm,rm,score,notes\nsft-1k,rm-10k,0.61,a\nsft-1k,rm-50k,0.64,b\n")
    assert store.import_rlhf_csv(db, csv) == 2
    assert store.import_rlhf_csv(db, csv) == 2  # rerun replaces, no duplicates
    con = store.connect(db)
    assert con.execute("SELECT count(*), avg(score) FROM rlhf_results").fetchone() == (2, pytest.approx(0.625))
    con.close()
    bad = tmp_path / "bad.csv"
    bad.write_text("pm,rm,score\na,b,0.5\na,,0.3\nc,d,high\n")
    with pytest.raises(ValueError, match=r"lines \[3, 4\]"):
        store.import_rlhf_csv(db, bad)
    with pytest.raises(ValueError, match="missing column"):
        nocol = tmp_path / "nocol.csv"
        nocol.write_text("policy,score\na,1\n")
        store.import_rlhf_csv(db, nocol)
