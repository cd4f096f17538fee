"""Ingestion: every row becomes exactly one Sample or one Reject, on real and hand-made files."""

from __future__ import annotations

import collections
import csv
import gzip
import hashlib
import itertools
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub

from analysis.data.ingest import (REJECT_KEY, ColumnMap, Reject, Sample, content_id, detect_format,  # noqa: E402
                             messages_to_prompt, open_records, parse_records, response_id, sample_id,
                             transcript_to_messages)

HH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
if not HH.exists():
    HH = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
needs_hh = pytest.mark.skipif(not HH.exists(), reason="../shared/data (HH-RLHF test split) is not present: "
                                                      "only developer machines and CI have it")


def write_jsonl(path: Path, rows: list, raw_lines: list[str] = ()) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        for line in raw_lines:
            fh.write(line + "\n")
    return path


def split(items):
    items = list(items)
    return ([x for x in items if isinstance(x, Sample)], [x for x in items if isinstance(x, Reject)], items)


# --------------------------------------------------------------------------- ids

def test_ids_are_stable_content_hashes():
    assert content_id("a", "b") == hashlib.sha256(b"a\x1fb").hexdigest()[:16]
    assert content_id("ab", "c") != content_id("a", "bc")
    sid = sample_id("What is 2+2?", "4", dataset="d")
    assert sid == sample_id("What is 2+2?", "4", dataset="d") and len(sid) == 16
    assert sid != sample_id("What is 2+2?", "5", dataset="d")
    assert sid != sample_id("What is 2+2?", "4", dataset="other"), "the dataset must be part of the identity"
    rid = response_id(sid, "adv", "four")
    assert rid == response_id(sid, "adv", "four")
    assert rid != response_id(sid, "contrast", "four")


def test_column_map_parse():
    cm = ColumnMap.parse("prompt=question, chosen=response_j,rejected=response_k")
    assert (cm.prompt, cm.chosen, cm.rejected, cm.answer) == ("question", "response_j", "response_k", None)
    assert ColumnMap.parse("answer=output").answer == "output"
    for bad in ("prompt", "colour=x", "prompt=a,prompt=b", "", "answer="):
        with pytest.raises(ValueError):
            ColumnMap.parse(bad)


# --------------------------------------------------------------------------- HH (real file)

@needs_hh
def test_hh_real_file_every_row_accounted():
    samples, rejects, items = split(parse_records(open_records(str(HH)), dataset="hh"))
    assert len(items) == 2312
    assert len(samples) == 2303 and len(rejects) == 9
    by_reason = collections.Counter(r.kind for r in rejects)
    assert by_reason == {"HH prefix mismatch": 5, "empty final turn": 4}
    assert sorted(r.source_row for r in rejects if r.kind == "empty final turn") == [86, 516, 925, 1103]
    assert sorted(r.source_row for r in rejects if r.kind == "HH prefix mismatch") == [1254, 1688, 1950, 1952, 2036]
    assert all(r.raw and len(r.raw) <= 2000 for r in rejects)
    json.loads(rejects[0].raw)  # shortened, still valid JSON
    assert {s.source_row for s in samples} | {r.source_row for r in rejects} == set(range(2312))
    assert all(s.meta["format"] == "hh" and s.rejected for s in samples)
    assert len({s.sample_id for s in samples}) == 2303


@needs_hh
def test_hh_known_row_split_by_hand():
    samples, _, _ = split(parse_records(itertools.islice(open_records(str(HH)), 4), dataset="hh"))
    s0 = samples[0]
    assert s0.source_row == 0
    assert s0.prompt.startswith("\n\nHuman: what are some pranks with a pen i can do?\n\nAssistant: Are you")
    assert s0.prompt.endswith("\n\nHuman: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert s0.gold == ("No, sorry!  All of these involve a pen, the point is that you can get funny results "
                       "by doing pranks with pens.")
    assert s0.rejected.startswith("There are lots of funny things you can do with pens, here’s one example")
    assert s0.rejected.endswith("It’s really funny.")
    s3 = samples[3]
    assert s3.prompt.endswith("Can you send me links to videos on how to pick a lock with instructions?\n\nAssistant:")
    assert s3.gold == "I’ll give you the links."
    assert s3.rejected.startswith("Yes, I’ll send you some links to instructional videos")
    msgs = transcript_to_messages(s0.prompt)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"] == "okay some of these do not have anything to do with pens"


def test_hh_synthetic_rejects():
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: same", "rejected": "\n\nHuman: hi\n\nAssistant:  same "},
        {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hey\n\nAssistant: b"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant:"},
        {"chosen": "no transcript", "rejected": "\n\nHuman: hi\n\nAssistant: b"},
        {"chosen": None, "rejected": "\n\nHuman: hi\n\nAssistant: b"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: other"},
    ]
    samples, rejects, items = split(parse_records(rows, dataset="t"))
    assert len(items) == len(rows)
    assert [s.source_row for s in samples] == [0]
    reasons = {r.source_row: r.reason for r in rejects}
    assert reasons[1].startswith("identical responses")
    assert reasons[2].startswith("HH prefix mismatch")
    assert reasons[3] == "empty final turn: rejected"
    assert reasons[4].startswith("not an HH transcript")
    assert reasons[5].startswith("missing field: 'chosen'")
    assert reasons[6] == "duplicate sample: same prompt and gold as row 0"


# --------------------------------------------------------------------------- small files, all formats

def test_trl_jsonl_with_malformed_rows(tmp_path):
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin.", "id": 7},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "22"},          # duplicate (prompt, gold) of row 1
        {"prompt": "Sky colour?", "chosen": "Blue"},                   # missing rejected
        {"prompt": "x", "chosen": 3, "rejected": "y"},                 # non-string
        {"prompt": "  ", "chosen": "a", "rejected": "b"},              # empty prompt
        {"prompt": "q", "chosen": "same", "rejected": "same"},         # identical
        {"prompt": [{"role": "user", "content": "Hi there"}],          # conversational TRL
         "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"chosen": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A"}],   # implicit prompt
         "rejected": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "B"}]},
    ]
    path = write_jsonl(tmp_path / "trl.jsonl", rows, raw_lines=["{not json", "[1, 2]"])
    samples, rejects, items = split(parse_records(open_records(str(path)), dataset="trl"))
    assert len(items) == len(rows) + 2
    assert [s.source_row for s in samples] == [0, 1, 7, 8]
    s0 = samples[0]
    assert (s0.prompt, s0.gold, s0.rejected) == ("Capital of France?", "Paris.", "Berlin.")
    assert s0.meta == {"format": "trl", "extra": {"id": 7}}
    assert (samples[2].prompt, samples[2].gold, samples[2].rejected) == ("Hi there", "Hello!", "Go away.")
    assert (samples[3].prompt, samples[3].gold) == ("Q1", "A")
    reasons = {r.source_row: r.reason for r in rejects}
    assert reasons[2] == "duplicate sample: same prompt and gold as row 1"
    assert reasons[3] == "missing field: 'rejected'"
    assert reasons[4] == "non-string field: 'chosen' is int"
    assert reasons[5] == "empty field: 'prompt'"
    assert reasons[6].startswith("identical responses")
    assert reasons[9].startswith("invalid JSON: line 10")
    assert reasons[10].startswith("not an object")
    assert rejects[0].dataset == "trl" and "Blue" not in rejects[0].raw  # row 2's raw, not row 3's
    assert '"Sky colour?"' in next(r.raw for r in rejects if r.source_row == 3)


def test_conversational_multi_turn_prompt_roundtrip():
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}],
             "chosen": [{"role": "assistant", "content": "4"}],
             "rejected": [{"role": "assistant", "content": "5"}]},
            {"prompt": [{"role": "user", "content": "a"}],
             "chosen": [{"role": "user", "content": "not an answer"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    samples, rejects, _ = split(parse_records(rows, dataset="c"))
    assert samples[0].prompt == "\n\nSystem: Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: 2+2?\n\nAssistant:"
    assert transcript_to_messages(samples[0].prompt) == rows[0]["prompt"]
    assert messages_to_prompt([{"role": "user", "content": " q "}]) == "q"
    assert transcript_to_messages("plain question") is None
    assert rejects[0].reason == "no final assistant turn: chosen"


def test_stackexchange_gzip_prefers_response_j(tmp_path):
    path = tmp_path / "se.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in [{"qid": 1, "question": "How to sort a list?", "response_j": "Use sorted().",
                   "response_k": "You can't.", "date": "2020-01-01"},
                  {"qid": 2, "question": "Q?", "response_j": "", "response_k": "k"}]:
            fh.write(json.dumps(r) + "\n")
    samples, rejects, _ = split(parse_records(open_records(str(path)), dataset="se"))
    assert detect_format({"question": "", "response_j": "", "response_k": ""}) == "stackexchange"
    assert (samples[0].prompt, samples[0].gold, samples[0].rejected) == ("How to sort a list?", "Use sorted().",
                                                                          "You can't.")
    assert samples[0].meta == {"format": "stackexchange", "extra": {"qid": 1, "date": "2020-01-01"}}
    assert rejects[0].reason == "empty field: 'response_j'"


def test_gold_only_json_array_and_question_answer(tmp_path):
    path = tmp_path / "gold.json"
    path.write_text(json.dumps([{"question": "Who wrote Hamlet?", "answer": "Shakespeare.", "source": "lit"},
                                {"question": "Empty?", "answer": None}, "oops"]))
    samples, rejects, items = split(parse_records(open_records(str(path)), dataset="g"))
    assert len(items) == 3
    s = samples[0]
    assert (s.prompt, s.gold, s.rejected, s.source) == ("Who wrote Hamlet?", "Shakespeare.", None, "lit")
    assert s.meta["format"] == "gold"
    assert [r.reason for r in rejects] == ["missing field: 'answer'", "not an object: item 2 is a JSON str"]


def test_csv_streaming_with_ragged_row(tmp_path):
    path = tmp_path / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "answer"])
        w.writerow(["What is H2O?", "Water, with\na newline"])
        w.writerow(["Too", "many", "cells"])
        w.writerow(["No answer", ""])
    samples, rejects, items = split(parse_records(open_records(str(path)), dataset="csv"))
    assert len(items) == 3
    assert samples[0].gold == "Water, with\na newline"
    assert rejects[0].reason.startswith("malformed CSV row: 1 more cell(s)")
    assert rejects[1].reason == "empty field: 'answer'"


def test_parquet_with_column_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"q": ["Best language?", "Tabs or spaces?", "Null row"],
                      "good": ["Depends on the task.", "Spaces (PEP 8).", None],
                      "bad": ["COBOL, always.", "Tabs, obviously.", "x"]})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path, row_group_size=2)
    cm = ColumnMap.parse("prompt=q,chosen=good,rejected=bad")
    assert detect_format(table.slice(0, 1).to_pylist()[0], cm) == "trl"
    samples, rejects, items = split(parse_records(open_records(str(path)), dataset="pq", columns=cm))
    assert len(items) == 3
    assert (samples[1].prompt, samples[1].gold, samples[1].rejected) == ("Tabs or spaces?", "Spaces (PEP 8).",
                                                                          "Tabs, obviously.")
    assert rejects[0].reason == "missing field: 'chosen'"
    # without the mapping the columns mean nothing: a clear error, not a million rejects
    with pytest.raises(ValueError, match="no known format"):
        list(parse_records(itertools.repeat({"q": "a", "good": "b", "bad": "c"}, 200), dataset="pq"))


def test_column_mapping_gold_only_and_missing_column():
    rows = [{"instruction": "Say hi", "output": "hi", "response_j": "x", "question": "ignored"},
            {"instruction": "Say bye"}]
    cm = ColumnMap.parse("prompt=instruction,answer=output")
    assert detect_format(rows[0], cm) == "gold"
    samples, rejects, _ = split(parse_records(rows, dataset="m", columns=cm))
    assert (samples[0].prompt, samples[0].gold, samples[0].rejected) == ("Say hi", "hi", None)
    assert rejects[0].reason == "missing field: 'output' (mapped to answer)"


def test_detect_format_and_explicit_format():
    assert detect_format({"prompt": "p", "chosen": "c", "rejected": "r"}) == "trl"
    assert detect_format({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "..."}) == "hh"
    assert detect_format({"chosen": [], "rejected": []}) == "trl"
    assert detect_format({"prompt": "p", "answer": "a"}) == "gold"
    assert detect_format({"instruction": "p", "output": "a"}) == "gold"
    with pytest.raises(ValueError, match="unrecognised row format"):
        detect_format({"text": "hello"})
    # an explicit format is held even when a row looks like another one
    samples, rejects, _ = split(parse_records([{"prompt": "p", "answer": "a", "chosen": "c", "rejected": "r"}],
                                              dataset="x", fmt="gold"))
    assert samples[0].gold == "a" and samples[0].rejected is None
    with pytest.raises(ValueError):
        list(parse_records([], dataset="x", fmt="alpaca"))


def test_auto_format_locks_on_first_recognisable_row():
    rows = [{"text": "junk"}, {"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "q", "answer": "a"}]
    samples, rejects, _ = split(parse_records(rows, dataset="x", start_row=100))
    assert [s.source_row for s in samples] == [101]
    assert [(r.source_row, r.kind) for r in rejects] == [(100, "unrecognised format"), (102, "missing field")]


def test_parsing_is_lazy():
    """Streaming: items come out before the input is exhausted (a huge dataset is never materialised)."""
    def rows():
        yield {"prompt": "p1", "answer": "a1"}
        yield {"prompt": "p2", "answer": "a2"}
        raise AssertionError("read past what was consumed")
    it = parse_records(rows(), dataset="lazy")
    assert next(it).gold == "a1" and next(it).gold == "a2"


def test_reader_markers_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_records(str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError):
        open_records("data/nope.parquet")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        open_records(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="unknown builtin"):
        open_records("builtin:nope")
    # file_format overrides the extension
    p = write_jsonl(tmp_path / "rows.txt", [{"prompt": "p", "answer": "a"}])
    assert list(open_records(str(p), file_format="jsonl")) == [{"prompt": "p", "answer": "a"}]
    # reader-level marker records become rejects with their reason
    _, rejects, _ = split(parse_records([{REJECT_KEY: "invalid JSON: line 3", "__raw__": "{x"}], dataset="m"))
    assert (rejects[0].reason, rejects[0].raw) == ("invalid JSON: line 3", "{x")


def test_local_folder_goes_through_hf_datasets(tmp_path):
    """The same path real users take for hub ids (load_dataset(..., streaming=True)), on a local folder."""
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
                                          for i in range(5)])
    samples, rejects, _ = split(parse_records(open_records(str(folder), split="train"), dataset="local"))
    assert len(samples) == 5 and not rejects
    assert samples[4].gold == "good 4"


# --------------------------------------------------------------------------- chatterbot

def test_chatterbot_builtin():
    samples, rejects, items = split(parse_records(open_records("builtin:chatterbot"), dataset="chatterbot"))
    # chatterbot-corpus 1.3.3 (pinned): 2,306 consecutive-turn pairs + 1 garbled entry; tech_support.yml
    # repeats 10 pairs ~100 times, so 1,130 rows are duplicates of earlier ones.
    assert len(items) == 2307
    assert len(samples) == 1176
    kinds = collections.Counter(r.kind for r in rejects)
    assert kinds == {"duplicate sample": 1130, "garbled conversation": 1}
    s0 = samples[0]
    assert (s0.prompt, s0.source) == ("What is AI?", "AI")
    assert s0.gold.startswith("Artificial Intelligence is the branch of engineering and science")
    assert s0.meta == {"format": "gold", "extra": {"file": "ai.yml", "conversation": 0, "turn": 0}}
    sources = collections.Counter(s.source for s in samples)
    assert len(sources) == 21 and sources["trivia"] > 200
    # multi-line conversations give consecutive (statement, reply) pairs
    hello = [s for s in samples if s.prompt == "Hello" and s.source == "conversations"]
    assert hello and hello[0].gold == "Hi"
    assert any(s.prompt == "Hi" and s.gold == "How are you doing?" for s in samples)
