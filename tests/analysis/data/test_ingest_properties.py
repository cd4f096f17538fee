"""Property tests (Hypothesis) for ingest: whatever rows come in, none is lost.

For any sequence of rows built from valid rows, malformed rows, duplicates, odd Unicode (RTL, zero-width,
emoji, lone surrogates as JSON escapes), very long fields and mixed row / file formats:
samples + rejects == input rows, every reject has a reason, and rerunning adds nothing.
Deterministic (derandomize=True) and bounded, so CI sees the same examples every time.
"""

import csv
import gzip
import io
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from analysis.data.ingest import Reject, Sample, open_records, parse_records
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.precompute import Precompute
from analysis.storage import store

ODD = ["\u202e", "\u05d0\u05d1", "\u0627\u0644", "\u200b", "\u200d", "\ufeff", "\U0001f600", "\U0001f469\u200d\U0001f4bb",
       "e\u0301", "\u2028", "\x00", "\t", "\n", "\r", '"', "\\", ",", "'", "<b>", "  "]
LONE = ["\ud800", "\udfff", "\udc80"]


def _text(allow_surrogates: bool):
    pieces = st.one_of(st.characters(codec="utf-8"), st.sampled_from(ODD + (LONE if allow_surrogates else [])))
    short = st.lists(pieces, max_size=30).map("".join)
    long = st.builds(lambda piece, n: piece * n, st.lists(pieces, min_size=1, max_size=5).map("".join),
                     st.integers(2000, 6000))
    return st.one_of(short, short, short, long)


def _rows(allow_surrogates: bool):
    """One input row each: ('obj', dict) written as JSON, or ('line', raw text) that is not a JSON object."""
    t = _text(allow_surrogates)
    trl = st.fixed_dictionaries({"prompt": t, "chosen": t, "rejected": t})
    gold = st.fixed_dictionaries({"prompt": t, "answer": t})
    se = st.fixed_dictionaries({"question": t, "response_j": t, "response_k": t})
    broken = st.one_of(
        trl.map(lambda d: {k: v for k, v in d.items() if k != "chosen"}),      # missing field
        trl.map(lambda d: {**d, "chosen": d["rejected"]}),                       # identical responses
        trl.map(lambda d: {**d, "chosen": 42}),                                   # wrong type
        trl.map(lambda d: {**d, "rejected": ["a", "b"]}),                         # mixed types
        trl.map(lambda d: {**d, "prompt": None}),
        st.fixed_dictionaries({"unrelated": t}),
    )
    obj = st.one_of(trl, trl, gold, se, broken).map(lambda d: ("obj", d))
    line = st.sampled_from(["{not json", "null", "42", '"a string"', "{'single': 'quotes'}", "tru"]).map(
        lambda x: ("line", x))
    return st.one_of(obj, obj, obj, line)


def _with_duplicates(rows):
    """Rows plus some exact repeats of earlier rows (duplicates must be rejects, not silently merged)."""
    return st.lists(rows, min_size=1, max_size=25).flatmap(
        lambda base: st.lists(st.sampled_from(base), max_size=5).map(lambda extra: base + extra))


def _jsonl_bytes(rows, ascii_only: bool) -> bytes:
    out = []
    for kind, value in rows:
        out.append(value if kind == "line" else json.dumps(value, ensure_ascii=ascii_only))
    text = "\n".join(out) + "\n"
    return text.encode("utf-8", "surrogatepass" if not ascii_only else "strict")


SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def _check(items, n_rows, what):
    assert len(items) == n_rows, f"{what}: {n_rows} input rows gave {len(items)} samples + rejects"
    for x in items:
        assert isinstance(x, (Sample, Reject)), x
        if isinstance(x, Reject):
            assert x.reason and x.reason.split(":", 1)[0].strip(), f"reject without a reason: {x}"
            x.raw.encode("utf-8")
            x.reason.encode("utf-8")
        else:
            for field in (x.prompt, x.gold, x.rejected or ""):
                field.encode("utf-8")  # storable
    ids = [x.sample_id for x in items if isinstance(x, Sample)]
    assert len(ids) == len(set(ids)), f"{what}: a sample id twice"
    assert [x.source_row for x in items] == list(range(n_rows)), f"{what}: rows out of order or missing"


@settings(max_examples=120, **SETTINGS)
@given(rows=_with_duplicates(_rows(True)), suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz"]),
       ascii_only=st.booleans())
def test_every_json_row_is_one_sample_or_one_reject(tmp_path_factory, rows, suffix, ascii_only):
    has_lone = any(c in json.dumps(v, ensure_ascii=False) for k, v in rows if k == "obj" for c in LONE)
    data = _jsonl_bytes(rows, ascii_only or has_lone)
    path = tmp_path_factory.mktemp("p") / f"d{suffix}"
    path.write_bytes(gzip.compress(data, mtime=0) if suffix.endswith(".gz") else data)
    try:
        items = list(parse_records(open_records(str(path)), dataset="d"))
    except ValueError as exc:  # only allowed: no row matched any format in the first 100 rows
        assert "no known format" in str(exc), exc
        return
    _check(items, len(rows), f"{suffix} ascii={ascii_only}")
    again = list(parse_records(open_records(str(path)), dataset="d"))
    assert again == items, "a second read of the same file differs"


def _csv_bytes(rows) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["prompt", "chosen", "rejected"])
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode("utf-8")


@settings(max_examples=80, **SETTINGS)
@given(rows=st.lists(st.tuples(_text(False), _text(False), _text(False)), min_size=1, max_size=20)
       .flatmap(lambda b: st.lists(st.sampled_from(b), max_size=3).map(lambda e: b + e)))
def test_every_csv_row_is_one_sample_or_one_reject(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("c") / "d.csv"
    path.write_bytes(_csv_bytes(rows))
    items = list(parse_records(open_records(str(path)), dataset="d"))
    _check(items, len(rows), "csv")


@settings(max_examples=15, **SETTINGS)
@given(rows=_with_duplicates(_rows(True)))
def test_stored_samples_plus_rejects_equal_rows_and_rerun_adds_nothing(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("s")
    path = folder / "d.jsonl"
    path.write_bytes(_jsonl_bytes(rows, True))
    db = folder / "s.duckdb"
    cfg = PrecomputeConfig(dataset=str(path), db=db, variants=["rejected"], umap=False, progress=False)

    def counts():
        con = store.connect(db)
        try:
            return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                         for t in ("samples", "rejects", "responses"))
        finally:
            con.close()

    try:
        Precompute(cfg, log=lambda m: None).ingest()  # the ingest stage of the real precompute, into a real DB
    except ValueError as exc:
        assert "no known format" in str(exc), exc
        return
    first = counts()
    assert first[0] + first[1] == len(rows), f"stored samples {first[0]} + rejects {first[1]} != rows {len(rows)}"
    con = store.connect(db)
    empty = con.execute("SELECT count(*) FROM rejects WHERE coalesce(trim(reason), '') = ''").fetchone()[0]
    con.close()
    assert empty == 0, f"{empty} rejects without a reason"
    Precompute(cfg, log=lambda m: None).ingest()
    assert counts() == first, f"rerun changed the stored counts: {first} -> {counts()}"
