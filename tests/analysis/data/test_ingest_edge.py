"""Input edge cases: JSON documents in .json/.jsonl, empty files, bad bytes, bad quoting, broken archives."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.data.ingest import Reject, open_records, parse_records
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.precompute import run_precompute

RECS = [{"prompt": f"q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]


def _parse(path):
    return list(parse_records(open_records(str(path)), dataset="d"))


def _kinds(items):
    return [type(x).__name__ for x in items]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("shape", ["array-one-line", "array-pretty", "data-one-line", "data-pretty"])
def test_json_document_in_json_or_jsonl_file_is_read_as_records(tmp_path, suffix, shape):
    doc = RECS if shape.startswith("array") else {"data": RECS}
    text = json.dumps(doc, indent=2 if shape.endswith("pretty") else None)
    path = tmp_path / f"d{suffix}"
    path.write_text(text)
    items = _parse(path)
    assert _kinds(items) == ["Sample"] * 3, f"{shape}{suffix}: {[getattr(x, 'reason', 'ok') for x in items]}"


def test_pretty_printed_single_record_is_one_sample(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(RECS[0], indent=2))
    assert _kinds(_parse(path)) == ["Sample"]


def test_jsonl_with_broken_first_line_still_reads_the_rest(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{broken\n" + "".join(json.dumps(r) + "\n" for r in RECS))
    items = _parse(path)
    assert _kinds(items) == ["Reject", "Sample", "Sample", "Sample"], [getattr(x, "reason", "") for x in items]
    assert "line 1" in items[0].reason


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"[]"])
def test_empty_file_stops_with_a_clear_message_before_any_model_loads(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    pm = tmp_path / "pm"  # passes the reference check, but loading it would fail with a different error
    pm.mkdir()
    (pm / "config.json").write_text("{}")
    cfg = PrecomputeConfig(dataset=str(path), db=tmp_path / "s.duckdb", policies=[str(pm)],
                           variants=["contrast"], progress=False)
    with pytest.raises(ValueError, match="empty|no rows") as err:
        run_precompute(cfg, log=lambda m: None)
    assert str(path) in str(err.value) and "\n" not in str(err.value), err.value


def test_non_utf8_bytes_become_one_reject_with_line_number(tmp_path):
    lines = [json.dumps(r).encode() for r in RECS]
    lines[1] = lines[1].replace(b"good 1", b"good \xff\xfe 1")
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = _parse(path)
    assert _kinds(items) == ["Sample", "Reject", "Sample"], [getattr(x, "reason", "") for x in items]
    assert items[1].reason.startswith("invalid UTF-8: line 2"), items[1].reason


def test_non_utf8_bytes_in_csv_reject_that_row_only(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,chosen,rejected\nq1,good 1,bad 1\nq2,go\xe9d 2,bad 2\nq3,good 3,bad 3\n")
    items = _parse(path)
    assert _kinds(items) == ["Sample", "Reject", "Sample"], [getattr(x, "reason", "") for x in items]
    assert "invalid UTF-8: line 3" in items[1].reason, items[1].reason


def test_csv_unterminated_quote_reports_the_line_where_it_started(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\nq1,good 1,bad 1\nq2,"good 2,bad 2\nq3,good 3,bad 3\nq4,good 4,bad 4\n')
    items = _parse(path)
    assert _kinds(items) == ["Sample", "Reject"], [getattr(x, "reason", "") for x in items]
    assert "unterminated quote" in items[1].reason and "line 3" in items[1].reason, items[1].reason


def test_parquet_column_of_wrong_type_names_the_real_problem(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["q1", "q2"], "chosen": ["good 1", "good 2"],
                             "rejected": pa.array([["x"], ["y"]], type=pa.list_(pa.string()))}), path)
    items = _parse(path)
    assert all(isinstance(x, Reject) for x in items), items
    reason = items[0].reason
    assert "conversational" not in reason and "'rejected' is list" in reason and "'chosen' is str" in reason, reason


def test_list_of_strings_names_the_item_type(tmp_path):
    items = list(parse_records([{"prompt": [{"role": "user", "content": "q"}], "chosen": ["a"], "rejected": ["b"]}],
                               dataset="d"))
    assert "list of str" in items[0].reason, items[0].reason


def test_truncated_gzip_is_one_clear_value_error(tmp_path):
    body = "".join(json.dumps({**RECS[0], "prompt": f"question number {i} " * 20}) + "\n" for i in range(3000))
    blob = gzip.compress(body.encode())
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError) as err:
        _parse(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg, msg


def test_non_gzip_gz_is_refused_at_open(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_text(json.dumps(RECS[0]) + "\n")
    with pytest.raises(ValueError, match="not gzip-compressed") as err:
        open_records(str(path))
    assert str(path) in str(err.value)


def test_lone_surrogate_escape_is_a_reject_and_storable(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "q\\ud800", "chosen": "a", "rejected": "b"}\n' + json.dumps(RECS[0]) + "\n")
    items = _parse(path)
    assert _kinds(items) == ["Reject", "Sample"], items
    assert items[0].reason.startswith("invalid text") and "prompt" in items[0].reason, items[0].reason
    items[0].raw.encode("utf-8")  # storable: no lone surrogate left


def test_broken_pretty_printed_array_is_one_clear_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(RECS, indent=2)[:-3])
    with pytest.raises(ValueError, match=r"not valid JSON \(line \d+, column \d+") as err:
        _parse(path)
    assert str(path) in str(err.value)


def test_jsonl_whose_first_line_is_an_array_keeps_line_rejects(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("[1, 2]\n" + json.dumps(RECS[0]) + "\n")
    items = _parse(path)
    assert _kinds(items) == ["Reject", "Sample"], [getattr(x, "reason", "") for x in items]
