"""Ingestion of preference / gold-answer datasets into `Sample`s, streaming and loss-free.

Why it looks like this:

* **Streaming.** Real preference sets have millions of rows, so every reader below is a generator
  (JSONL line by line, Parquet batch by batch, CSV row by row, HF `datasets` with `streaming=True`).
  The only per-row state kept is an 8-byte hash per accepted sample, to report duplicates (about
  100 bytes of Python overhead each: ~100 MB for 1M samples; the dataset itself is never held).
* **Loss-free.** SEAM numbers are only trustworthy if nobody silently lost rows on the way in, so
  `parse_records` turns *every* input row into exactly one `Sample` or one `Reject` carrying a
  human-readable reason ("<category>: <detail>"; group by the part before ':' to count by kind).
  Rows a reader cannot even decode (bad JSON line, ragged CSV row) reach the parser as a marker
  record (`REJECT_KEY`) so they are counted like any other malformed row.
* **Stable ids.** `sample_id` is a content hash of (dataset name, prompt, gold), so labels and exports keyed
  by it survive re-ingestion, reordering and sharding, and the same pair in two datasets is two samples
  (one per dataset, never one silently dropped); `response_id` likewise for each scored response.
  DBs written when the id was hash(prompt, gold) keep those ids (`legacy_sample_id`).

Formats (`detect_format`): `trl` ({prompt, chosen, rejected}, plain strings or conversational lists of
{role, content} messages, prompt optional for the conversational form), `stackexchange` ({question,
response_j, response_k}, response_j preferred), `hh` ({chosen, rejected} full "\\n\\nHuman: ...
\\n\\nAssistant: ..." transcripts) and `gold` ({prompt|question|instruction, answer|response|
completion|output}, no rejected answer). `builtin:chatterbot` yields gold records.

Multi-turn prompts are stored as one string in the HH transcript style ("\\n\\nHuman: ...\\n\\nAssistant:");
`transcript_to_messages` turns such a prompt back into chat messages for models with a chat template,
so no message list is duplicated in the DB.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import sys
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from analysis.errors import UserError, first_line

FORMATS = ("trl", "stackexchange", "hh", "gold")
BUILTINS = ("builtin:chatterbot",)

#: Marker key: a reader could not decode this row; the value is the reason (the row becomes a Reject).
REJECT_KEY = "__reject__"
#: With REJECT_KEY: the undecodable raw text, kept for the rejects table.
RAW_KEY = "__raw__"

RAW_LIMIT = 2000  # characters of the offending row kept in Reject.raw

_HUMAN = "\n\nHuman:"
_ASSISTANT = "\n\nAssistant:"

# Column-name aliases for the gold-only format, in priority order.
_GOLD_PROMPT_KEYS = ("prompt", "question", "instruction")
_GOLD_ANSWER_KEYS = ("answer", "response", "completion", "output")

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                 ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
# Suffixes that mark a reference as a local path even when the file is missing (so a typo gives
# "file not found" instead of an obscure hub lookup error).
_PATHY_SUFFIXES = set(_FILE_FORMATS) | set(_COMPRESSED) | {".txt", ".yaml", ".yml", ".arrow", ".xlsx", ".zip"}


# --------------------------------------------------------------------------- ids

def content_id(*parts: str) -> str:
    """sha256 of the parts joined by the ASCII unit separator, first 16 hex chars (64 bits).

    The separator keeps ("ab", "c") and ("a", "bc") apart; 64 bits make accidental collisions
    negligible below billions of items while keeping ids short enough to read in the UI."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def sample_id(prompt: str, gold: str, *, dataset: str) -> str:
    """Id of a (prompt, gold answer) pair within a dataset: the same pair in the same dataset gets the same
    id on every run and machine; the same pair in another dataset is another sample (its own id), so
    ingesting a file under a second name never collides with (and silently drops against) the first."""
    return content_id("sample", dataset, prompt, gold)


def legacy_sample_id(prompt: str, gold: str) -> str:
    """The id DBs written before sample ids included the dataset gave a pair. Such rows keep their ids (labels
    and exports refer to them); the precompute reuses them when it sees the same pair in the same dataset."""
    return content_id("sample", prompt, gold)


def response_id(sample_id: str, variant: str, text: str) -> str:
    """Id of one response to one sample under one variant (gold, contrast, adv, generated, ...)."""
    return content_id("response", sample_id, variant, text)


# --------------------------------------------------------------------------- records

@dataclass(frozen=True)
class Sample:
    """One prompt with its gold (chosen / reference) answer and, if the dataset has one, its rejected one."""
    sample_id: str
    dataset: str
    source_row: int
    prompt: str
    gold: str
    rejected: str | None
    source: str | None
    meta: dict = field(default_factory=dict, hash=False)  # compared, but not hashed (a dict)


@dataclass(frozen=True)
class Reject:
    """An input row that could not become a Sample, kept with the reason (never dropped silently)."""
    dataset: str
    source_row: int
    reason: str
    raw: str

    def __post_init__(self) -> None:
        # The reason and raw text go into the DB as UTF-8: lone surrogates (from JSON escapes or undecodable
        # bytes) are written as visible escapes instead of failing the whole chunk's insert.
        object.__setattr__(self, "reason", _storable(self.reason))
        object.__setattr__(self, "raw", _storable(self.raw))

    @property
    def kind(self) -> str:
        """The reason's category (text before ':'), for counting rejects by kind."""
        return self.reason.split(":", 1)[0]


@dataclass
class ColumnMap:
    """Which source columns play the canonical roles, for datasets with their own column names.

    Setting `chosen` + `rejected` (and usually `prompt`) means a preference format; setting `answer`
    means gold-only. `source` optionally names a column with a sub-source / category."""
    prompt: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    answer: str | None = None
    source: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ColumnMap":
        """'prompt=question,chosen=response_j,rejected=response_k' -> ColumnMap (the --columns flag)."""
        names = {f.name for f in fields(cls)}
        out: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, col = part.partition("=")
            key, col = key.strip(), col.strip()
            if not sep or not col:
                raise ValueError(f"--columns: expected role=column, got {part!r}")
            if key not in names:
                raise ValueError(f"--columns: unknown role {key!r}; roles are {', '.join(sorted(names))}")
            if key in out:
                raise ValueError(f"--columns: role {key!r} given twice")
            out[key] = col
        if not out:
            raise ValueError("--columns: empty mapping")
        return cls(**out)

    def mapped(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


# --------------------------------------------------------------------------- readers

def open_records(source: str, *, split: str = "train", data_dir: str | None = None,
                 file_format: str | None = None) -> Iterator[dict]:
    """Stream the rows of `source` as dicts, never loading the whole dataset.

    `source` is a local file (.jsonl, .jsonl.gz, .json, .parquet, .csv, .tsv; .gz/.bz2/.xz compressed
    text files too), `builtin:chatterbot`, a local folder (read by HF `datasets`), or a Hugging Face
    datasets id loaded with `load_dataset(source, data_dir=..., split=..., streaming=True)`.
    `file_format` (jsonl | json | parquet | csv | tsv) overrides the extension.
    Undecodable rows come through as `{REJECT_KEY: reason, RAW_KEY: text}` so the caller can count them.
    """
    if source.startswith("builtin:"):
        if source == "builtin:chatterbot":
            return _chatterbot_records()
        raise ValueError(f"unknown builtin dataset {source!r}; available: {', '.join(BUILTINS)}")
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        return _hf_records(str(path), split=split, data_dir=data_dir)
    if path.is_file():
        fmt = file_format or _format_from_suffix(path)
        _check_file(path)
        return _file_records(path, fmt)
    if _looks_like_path(source):
        raise FileNotFoundError(f"dataset file not found: {source}")
    if file_format:
        raise FileNotFoundError(f"dataset file not found: {source} (file_format={file_format!r} given)")
    return _hf_records(source, split=split, data_dir=data_dir)


def _looks_like_path(source: str) -> bool:
    p = Path(source)
    suffixes = {s.lower() for s in p.suffixes[-2:]}
    return (source.startswith((".", "/", "~")) or bool(suffixes & _PATHY_SUFFIXES)
            or (os.sep == "\\" and "\\" in source))


def _format_from_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _FILE_FORMATS:
        return _FILE_FORMATS[suffixes[-1]]
    raise ValueError(f"unsupported file type for {path.name!r}: use one of "
                     f"{', '.join(sorted(_FILE_FORMATS))} (optionally .gz/.bz2/.xz), or pass file_format=")


_MAGIC = {".gz": (b"\x1f\x8b", "gzip"), ".bz2": (b"BZh", "bzip2"), ".xz": (b"\xfd7zXZ\x00", "xz")}
# What a broken compressed stream raises: truncated (EOFError), not that format (BadGzipFile is an OSError),
# corrupt data (zlib.error, lzma.LZMAError).
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def _check_file(path: Path) -> None:
    """Refuse, before anything is loaded, a file that cannot hold rows: empty, or not the compression its
    suffix says (one line naming the file and the fix, instead of a traceback at the first row)."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"dataset file {path} is empty: nothing to ingest; pass a file with rows")
    magic = _MAGIC.get(path.suffix.lower())
    if magic is not None:
        with open(path, "rb") as fh:
            head = fh.read(len(magic[0]))
        if head != magic[0]:
            raise ValueError(f"{path} is not {magic[1]}-compressed (its first bytes are {head!r}); "
                             f"rename it without {path.suffix} if it is plain text, or re-download it")


def _open_binary(path: Path):
    opener = _COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener is not None else open(path, "rb")


def _stream_error(path: Path, exc: BaseException) -> ValueError:
    kind = _MAGIC.get(path.suffix.lower(), (None, "readable"))[1]
    return ValueError(f"cannot read {path}: {exc}; the file is truncated or not valid {kind} data: "
                      "re-download it, or decompress it yourself and pass the plain file")


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (decompressed), with a broken compressed stream as one ValueError."""
    try:
        with _open_binary(path) as fh:
            yield from fh
    except _STREAM_ERRORS as exc:
        if path.suffix.lower() not in _COMPRESSED:
            raise
        raise _stream_error(path, exc) from exc


def _decode_line(raw: bytes, lineno: int) -> tuple[str, str | None]:
    """(text, problem): a line that is not UTF-8 comes back decoded with U+FFFD and a reject reason naming the
    line, the byte and the fix, so one bad byte costs one row, not the whole file."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # UTF-8 byte-order mark
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        return raw.decode("utf-8", "replace"), (f"invalid UTF-8: line {lineno}: byte 0x{bad:02x} at column "
                                                f"{exc.start + 1}; re-save the file as UTF-8")


def _file_records(path: Path, fmt: str) -> Iterator[dict]:
    if fmt in ("jsonl", "json"):
        return _json_records(path)
    if fmt == "parquet":
        return _parquet_records(path)
    if fmt in ("csv", "tsv"):
        return _csv_records(path, "\t" if fmt == "tsv" else ",")
    raise ValueError(f"unknown file_format {fmt!r}; use jsonl, json, parquet, csv or tsv")


_RECORD_KEYS = frozenset({"prompt", "chosen", "rejected", "question", "response_j", "response_k",
                          *_GOLD_PROMPT_KEYS, *_GOLD_ANSWER_KEYS})


def _wrapped_list(obj: Any) -> list | None:
    """The records of a wrapper object like {"data": [{...}, ...]}: no record field of its own and exactly one
    value that is a list of objects. None for anything else (a record, e.g. conversational TRL, stays a record)."""
    if not isinstance(obj, dict) or _RECORD_KEYS & set(obj):
        return None
    lists = [v for v in obj.values() if isinstance(v, list)]
    if len(lists) == 1 and lists[0] and all(isinstance(x, dict) for x in lists[0]):
        return lists[0]
    return None


def _json_records(path: Path) -> Iterator[dict]:
    """JSON lines, streamed; or one JSON document (an array of records, or {"data": [...]}), whatever the
    suffix says, on one line or pretty-printed.

    Decided from the first non-blank line: a JSON object that is a record means JSON lines (one record or
    reject marker per line: bad JSON, not an object, not UTF-8). Anything else (an array, a wrapper object,
    a line that is only the start of a pretty-printed document) is parsed as one document; that has to be
    read whole (the standard library cannot stream JSON arrays): convert big ones to JSONL or Parquet.
    A document that does not parse is read as JSON lines after all (so a JSONL file with a broken or
    non-object first line still yields its other rows), unless it opens a multi-line array: that is one
    broken document, reported with its line and column."""
    first = None
    for lineno, raw in enumerate(_raw_lines(path), 1):
        if raw.strip():
            first = _decode_line(raw, lineno)[0]
            break
    if first is None:
        return
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if isinstance(head, dict) and _wrapped_list(head) is None:
        yield from _jsonl_records(path)
        return
    data = b"".join(_raw_lines(path))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # surrogateescape: bytes that are not UTF-8 survive as lone surrogates, and parse_records rejects the one
    # item holding them (an array has no lines to reject) instead of refusing the whole file.
    text = data.decode("utf-8", "surrogateescape")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if head is None and first.lstrip().startswith("["):  # a multi-line array that does not parse
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                             "fix it there, or write one JSON object per line (JSONL)") from None
        yield from _jsonl_records(path)
        return
    items = _wrapped_list(doc)
    if items is None:
        if isinstance(doc, dict):
            items = [doc]  # one (pretty-printed) record
        elif isinstance(doc, list):
            items = doc
        else:
            raise ValueError(f"{path}: expected JSON records (objects, an array of objects or "
                             f'{{"data": [...]}}), got a JSON {type(doc).__name__}')
    for i, obj in enumerate(items):
        if isinstance(obj, dict):
            yield obj
        else:
            yield {REJECT_KEY: f"not an object: item {i} is a JSON {type(obj).__name__}",
                   RAW_KEY: json.dumps(obj, ensure_ascii=False, default=str)[:RAW_LIMIT]}


def _jsonl_records(path: Path) -> Iterator[dict]:
    """One record per non-blank line; a line that is not UTF-8 or not a JSON object becomes a reject marker."""
    for lineno, raw in enumerate(_raw_lines(path), 1):
        if not raw.strip():
            continue
        line, problem = _decode_line(raw, lineno)
        if problem:
            yield {REJECT_KEY: problem, RAW_KEY: line[:RAW_LIMIT]}
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield {REJECT_KEY: f"invalid JSON: line {lineno}: {exc.msg}", RAW_KEY: line[:RAW_LIMIT]}
            continue
        if not isinstance(obj, dict):
            yield {REJECT_KEY: f"not an object: line {lineno} is a JSON {type(obj).__name__}",
                   RAW_KEY: line[:RAW_LIMIT]}
            continue
        yield obj


def _parquet_records(path: Path, batch_size: int = 1024) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is not a readable Parquet file ({exc}); re-export it, or pass "
                         "file_format= / a suffix that matches its content") from exc
    for batch in pf.iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


class _DecodedLines:
    """Text lines for csv.reader from a byte stream: lines that are not UTF-8 are decoded with U+FFFD and
    their problem kept by line number, so the CSV reader can turn exactly those rows into rejects."""

    def __init__(self, path: Path):
        self.problems: dict[int, str] = {}
        self._it = enumerate(_raw_lines(path), 1)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        lineno, raw = next(self._it)
        text, problem = _decode_line(raw, lineno)
        if problem:
            self.problems[lineno] = problem
        return text


def _csv_records(path: Path, delimiter: str) -> Iterator[dict]:
    """csv.DictReader (strict quoting), streamed. Cells are strings. Rejected with the line they start on:
    a row with more cells than the header, bad quoting, an unterminated quote (which would otherwise
    swallow the rest of the file into one cell) and non-UTF-8 bytes."""
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:  # C long is 32-bit on some platforms
        csv.field_size_limit(2**31 - 1)
    lines = _DecodedLines(path)
    reader = csv.DictReader(lines, delimiter=delimiter, strict=True)
    try:
        reader.fieldnames  # reads the header, so line_num counts from it
    except csv.Error as exc:
        raise ValueError(f"{path}: the CSV header (line 1) does not parse: {exc}; fix it") from None
    rows = iter(reader)
    while True:
        start = reader.line_num + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            if "unexpected end of data" in str(exc):
                reason = (f"malformed CSV: unterminated quote in the row starting at line {start} "
                          f"(it runs to the end of the file, line {end}); close the quote")
            else:
                reason = f"malformed CSV: {exc} (row starting at line {start})"
            yield {REJECT_KEY: reason, RAW_KEY: f"lines {start}-{end}"}
            continue
        bad = [n for n in range(start, reader.line_num + 1) if n in lines.problems]
        if bad:
            yield {REJECT_KEY: lines.problems[bad[0]],
                   RAW_KEY: json.dumps(row, ensure_ascii=False, default=str)[:RAW_LIMIT]}
            continue
        if None in row:
            extra = row.pop(None)
            yield {REJECT_KEY: f"malformed CSV row: {len(extra)} more cell(s) than header columns "
                               f"(line {start})",
                   RAW_KEY: json.dumps({**row, "_extra": extra}, ensure_ascii=False)[:RAW_LIMIT]}
            continue
        yield row


def _hf_records(source: str, *, split: str, data_dir: str | None) -> Iterator[dict]:
    """HF `datasets` in streaming mode: hub ids for real users, or a local folder of data files.
    Resolved eagerly, so a wrong id / split fails at open time, not at the first row."""
    from datasets import load_dataset
    try:
        ds = load_dataset(source, data_dir=data_dir, split=split, streaming=True)
    except Exception as exc:  # surface which reference failed; the original error stays chained
        raise UserError(f"could not load dataset {source!r} (split={split!r}, data_dir={data_dir!r}) "
                        f"with HF datasets: {first_line(exc)}; check the path or the dataset id") from exc
    return (dict(row) for row in ds)


def chatterbot_dir(language: str = "english") -> Path:
    """Folder of the chatterbot-corpus YAML files for `language` (inside the installed package)."""
    import chatterbot_corpus
    return Path(chatterbot_corpus.__file__).parent / "data" / language


def _chatterbot_records(language: str = "english") -> Iterator[dict]:
    """chatterbot-corpus as gold records {prompt, answer, source=category}.

    Each conversation is a list of statements where each one answers the previous (chatterbot's own
    training semantics), so consecutive turns (t_i, t_{i+1}) give the (question, answer) pairs.
    Known warts, passed on as reject markers so they are counted, not dropped: one trivia entry is a
    plain string instead of a list; `tech_support.yml` repeats 10 pairs ~100 times each and other files
    repeat a few, which `parse_records` reports as duplicates (2,306 pairs -> 1,176 unique samples).
    Lists of alternative answers to one question also become (answer, next answer) pairs: that is
    chatterbot's own reading of its corpus and is kept rather than guessed around."""
    import yaml
    files = sorted(glob.glob(str(chatterbot_dir(language) / "*.yml")))
    if not files:
        raise FileNotFoundError(f"no chatterbot-corpus YAML files for {language!r} in {chatterbot_dir(language)}")
    for path in files:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        cats = doc.get("categories") or [Path(path).stem]
        category = str(cats[0])
        for ci, conv in enumerate(doc.get("conversations") or []):
            base = {"source": category, "file": Path(path).name, "conversation": ci}
            if isinstance(conv, str):
                yield {REJECT_KEY: "garbled conversation: a single string instead of a list of statements",
                       RAW_KEY: json.dumps({**base, "text": conv}, ensure_ascii=False)[:RAW_LIMIT]}
                continue
            if not isinstance(conv, list) or len(conv) < 2:
                yield {REJECT_KEY: "no answer: conversation has fewer than two statements",
                       RAW_KEY: json.dumps({**base, "conversation_text": conv}, ensure_ascii=False,
                                           default=str)[:RAW_LIMIT]}
                continue
            for ti in range(len(conv) - 1):
                yield {"prompt": conv[ti], "answer": conv[ti + 1], **base, "turn": ti}


# --------------------------------------------------------------------------- format detection

def _canonical(record: dict, columns: ColumnMap | None) -> dict:
    """The row with mapped columns copied onto their canonical role names (prompt, chosen, rejected,
    answer, source). A mapped column missing from the row is a row error, not a silent fallback."""
    if columns is None:
        return record
    out = dict(record)
    for role, col in columns.mapped().items():
        if col not in record:
            raise _RowError(f"missing field: {col!r} (mapped to {role})")
        out[role] = record[col]
    return out


def detect_format(record: dict, columns: ColumnMap | None = None) -> str:
    """Which of FORMATS a row looks like, from its keys (after applying `columns`).

    Raises ValueError with the row's keys when nothing fits. Order matters: TRL and StackExchange
    rows have explicit prompt columns and are checked before HH (which has only chosen/rejected)."""
    if columns is not None:
        mapped = columns.mapped()
        if "answer" in mapped and ("chosen" in mapped or "rejected" in mapped):
            raise ValueError("--columns: map either answer (gold-only) or chosen/rejected, not both")
        if "answer" in mapped:
            return "gold"
        if "chosen" in mapped or "rejected" in mapped:
            return "trl" if ("prompt" in mapped or "prompt" in record) else "hh"
        # prompt (and/or source) only: detect from the real columns with those roles filled in
        record = {**record, **{role: record.get(col) for role, col in mapped.items()}}
    keys = set(record)
    if {"prompt", "chosen", "rejected"} <= keys:
        return "trl"
    if {"question", "response_j", "response_k"} <= keys:
        return "stackexchange"
    if {"chosen", "rejected"} <= keys:
        if isinstance(record["chosen"], list) or isinstance(record["rejected"], list):
            return "trl"  # conversational TRL with implicit prompt
        return "hh"
    if any(k in keys for k in _GOLD_PROMPT_KEYS) and any(k in keys for k in _GOLD_ANSWER_KEYS):
        return "gold"
    raise ValueError(f"unrecognised row format (keys: {', '.join(sorted(map(str, keys)))}); expected "
                     "{prompt, chosen, rejected}, {question, response_j, response_k}, HH {chosen, rejected} "
                     "or {prompt, answer}; pass --format / --columns")


# --------------------------------------------------------------------------- parsing

class _RowError(Exception):
    """A row-level problem: becomes a Reject with this message as reason."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(text: str) -> str:
    """`text` with lone surrogates as backslash escapes, so it always encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def _surrogate_in(value: Any, where: str = "") -> str | None:
    """Where (field path) a lone surrogate sits in a row, if anywhere: JSON escapes like "\\ud800" or bytes
    that were not UTF-8 decode to one; no text store can hold it, so the row is rejected, not mangled."""
    if isinstance(value, str):
        return where or "value" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and _SURROGATE.search(k):
                return f"a key of {where or 'the row'}"
            hit = _surrogate_in(v, f"{where}.{k}" if where else str(k))
            if hit:
                return hit
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            hit = _surrogate_in(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


def _norm(text: str) -> str:
    return " ".join(text.split())


def _truncate_raw(record: Any) -> str:
    """The row as JSON, at most ~RAW_LIMIT chars, valid JSON when possible: long string values are
    shortened first (with a '…[+N chars]' marker) so the reason's context stays readable."""
    try:
        full = json.dumps(record, ensure_ascii=False, default=str)
    except Exception:
        return repr(record)[:RAW_LIMIT]
    if len(full) <= RAW_LIMIT or not isinstance(record, dict):
        return full[:RAW_LIMIT]
    budget = max(80, RAW_LIMIT // max(1, len(record)) - 40)
    short = {}
    for k, v in record.items():
        if isinstance(v, str) and len(v) > budget:
            v = v[:budget] + f"…[+{len(v) - budget} chars]"
        elif not isinstance(v, (str, int, float, bool, type(None))):
            s = json.dumps(v, ensure_ascii=False, default=str)
            v = s[:budget] + (f"…[+{len(s) - budget} chars]" if len(s) > budget else "")
        short[k] = v
    return json.dumps(short, ensure_ascii=False, default=str)[:RAW_LIMIT]


def _get_str(rec: dict, key: str, label: str | None = None) -> str:
    label = label or key
    if key not in rec or rec[key] is None:
        raise _RowError(f"missing field: {label!r}")
    val = rec[key]
    if not isinstance(val, str):
        raise _RowError(f"non-string field: {label!r} is {type(val).__name__}")
    if not val.strip():
        raise _RowError(f"empty field: {label!r}")
    return val


def _messages(val: Any, label: str) -> list[dict]:
    if not isinstance(val, list):
        raise _RowError(f"mixed field types: {label!r} is {type(val).__name__} while the responses are message "
                        "lists; give it as a list of {role, content} messages too")
    out = []
    for m in val:
        if not isinstance(m, dict):
            raise _RowError(f"wrong type: {label!r} is a list of {type(m).__name__}, expected a string or a "
                            "list of {role, content} messages")
        if "role" not in m or "content" not in m:
            raise _RowError(f"bad message: {label!r} items need role and content")
        if not isinstance(m["content"], str):
            raise _RowError(f"non-string field: message content in {label!r} is {type(m['content']).__name__}")
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


_ROLE_LABEL = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}


def messages_to_prompt(messages: list[dict]) -> str:
    """A chat prefix as one prompt string: a lone user message is its plain content; anything longer
    is rendered HH-style ("\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:") so it stays readable
    in the UI and round-trips through `transcript_to_messages`."""
    if len(messages) == 1 and messages[0]["role"] in ("user", "human"):
        return messages[0]["content"].strip()
    parts = [f"\n\n{_ROLE_LABEL.get(m['role'].lower(), m['role'].capitalize())}: {m['content'].strip()}"
             for m in messages]
    return "".join(parts) + _ASSISTANT


_TURN_RE = re.compile(r"\n\n(Human|Assistant|System):")


def transcript_to_messages(prompt: str) -> list[dict] | None:
    """Parse an HH-style transcript prompt back into [{role, content}] (the final empty Assistant turn
    dropped), for scoring with a chat template. Returns None when `prompt` is not such a transcript."""
    if not prompt.startswith(("\n\nHuman:", "\n\nSystem:")):
        return None
    pieces = _TURN_RE.split(prompt)
    msgs = []
    roles = {"Human": "user", "Assistant": "assistant", "System": "system"}
    for role, content in zip(pieces[1::2], pieces[2::2]):
        msgs.append({"role": roles[role], "content": content.strip()})
    if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    return msgs or None


def _split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """HH pair -> (shared prompt up to and including the last '\\n\\nAssistant:', chosen, rejected)."""
    ic, ir = chosen.rfind(_ASSISTANT), rejected.rfind(_ASSISTANT)
    if ic < 0:
        raise _RowError("not an HH transcript: no '\\n\\nAssistant:' turn in chosen")
    if ir < 0:
        raise _RowError("not an HH transcript: no '\\n\\nAssistant:' turn in rejected")
    pc, pr = chosen[:ic + len(_ASSISTANT)], rejected[:ir + len(_ASSISTANT)]
    if pc != pr:
        raise _RowError("HH prefix mismatch: chosen and rejected differ before the final Assistant turn")
    if _HUMAN not in pc:
        raise _RowError("not an HH transcript: no '\\n\\nHuman:' turn before the final Assistant turn")
    a, b = chosen[ic + len(_ASSISTANT):].strip(), rejected[ir + len(_ASSISTANT):].strip()
    if not a:
        raise _RowError("empty final turn: chosen")
    if not b:
        raise _RowError("empty final turn: rejected")
    return pc, a, b


def _split_conversation(rec: dict) -> tuple[str, str, str]:
    """Conversational TRL: prompt messages (optional) + chosen / rejected message lists -> strings."""
    prompt_msgs = _messages(rec["prompt"], "prompt") if rec.get("prompt") is not None else []
    if "chosen" not in rec or rec["chosen"] is None:
        raise _RowError("missing field: 'chosen'")
    if "rejected" not in rec or rec["rejected"] is None:
        raise _RowError("missing field: 'rejected'")
    full_c = prompt_msgs + _messages(rec["chosen"], "chosen")
    full_r = prompt_msgs + _messages(rec["rejected"], "rejected")
    for label, full in (("chosen", full_c), ("rejected", full_r)):
        if not full or full[-1]["role"] != "assistant":
            raise _RowError(f"no final assistant turn: {label}")
    if full_c[:-1] != full_r[:-1]:
        raise _RowError("prompt prefix mismatch: chosen and rejected conversations differ before the final turn")
    if not full_c[:-1]:
        raise _RowError("missing field: 'prompt' (no messages before the final assistant turn)")
    a, b = full_c[-1]["content"].strip(), full_r[-1]["content"].strip()
    if not a:
        raise _RowError("empty final turn: chosen")
    if not b:
        raise _RowError("empty final turn: rejected")
    return messages_to_prompt(full_c[:-1]), a, b


def _first_key(rec: dict, keys: tuple[str, ...]) -> str:
    for k in keys:
        if k in rec:
            return k
    return keys[0]


def _extract(rec: dict, fmt: str) -> tuple[str, str, str | None]:
    """(prompt, gold, rejected) of one canonical row in format `fmt`, or _RowError."""
    if fmt == "trl":
        kinds = {k: type(rec.get(k)).__name__ for k in ("chosen", "rejected")}
        if all(isinstance(rec.get(k), list) for k in ("chosen", "rejected")):
            return _split_conversation(rec)
        if any(isinstance(rec.get(k), list) for k in ("chosen", "rejected")):
            raise _RowError(f"mixed field types: 'chosen' is {kinds['chosen']} but 'rejected' is "
                            f"{kinds['rejected']}; both must be strings or both lists of {{role, content}} messages")
        if isinstance(rec.get("prompt"), list):
            raise _RowError("mixed field types: 'prompt' is a list but 'chosen'/'rejected' are not; "
                            "use strings throughout or message lists throughout")
        prompt = _get_str(rec, "prompt").strip()
        return prompt, _get_str(rec, "chosen").strip(), _get_str(rec, "rejected").strip()
    if fmt == "stackexchange":
        return (_get_str(rec, "question").strip(), _get_str(rec, "response_j").strip(),
                _get_str(rec, "response_k").strip())
    if fmt == "hh":
        chosen, rejected = _get_str(rec, "chosen"), _get_str(rec, "rejected")
        return _split_hh(chosen, rejected)
    if fmt == "gold":
        pk, ak = _first_key(rec, _GOLD_PROMPT_KEYS), _first_key(rec, _GOLD_ANSWER_KEYS)
        return _get_str(rec, pk).strip(), _get_str(rec, ak).strip(), None
    raise ValueError(f"unknown format {fmt!r}; use auto or one of {', '.join(FORMATS)}")


_USED_KEYS = {"prompt", "chosen", "rejected", "answer", "source", "question", "response_j", "response_k",
              *_GOLD_PROMPT_KEYS, *_GOLD_ANSWER_KEYS}


def _extra(record: dict, columns: ColumnMap | None) -> dict:
    """Small scalar side columns (ids, dates, scores, categories) kept in meta; long text is not."""
    used = set(_USED_KEYS) | (set(columns.mapped().values()) if columns else set())
    out = {}
    for k, v in record.items():
        if k in used or not isinstance(k, str):
            continue
        if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 200):
            out[k] = v
    return out


def parse_records(records: Iterable[dict], *, dataset: str, fmt: str = "auto",
                  columns: ColumnMap | None = None, start_row: int = 0) -> Iterator[Sample | Reject]:
    """Turn rows into Samples; every row yields exactly one Sample or one Reject.

    `fmt='auto'` detects the format from the first row that matches one (rows before it are rejected
    as unrecognised) and then holds it for the whole stream, so one odd row cannot switch formats.
    If none of the first 100 rows matches a format, raises ValueError (wrong --format / --columns)
    instead of rejecting a whole dataset row by row.
    `start_row` is the row number of the first record (when resuming from an offset); duplicates
    are detected within this call only, so a resumed stream relies on the store's sample_id key.
    Trl / stackexchange / hh: gold = chosen, rejected = rejected; gold-only: rejected = None.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    locked = None if fmt == "auto" else fmt
    seen: dict[int, int] = {}
    first_error: str | None = None
    for i, record in enumerate(records):
        row = start_row + i
        if not isinstance(record, dict):
            yield Reject(dataset, row, f"not an object: row is {type(record).__name__}", _truncate_raw(record))
            continue
        if REJECT_KEY in record:
            yield Reject(dataset, row, str(record[REJECT_KEY]), str(record.get(RAW_KEY, ""))[:RAW_LIMIT])
            continue
        bad_text = _surrogate_in(record)
        if bad_text:
            yield Reject(dataset, row, f"invalid text: lone surrogate or undecodable byte in {bad_text}; fix the "
                                       "JSON escape or re-save the file as UTF-8", _truncate_raw(record))
            continue
        if locked is None:
            try:
                locked = detect_format(record, columns)
            except ValueError as exc:
                first_error = first_error or str(exc)
                if i >= 99:
                    raise ValueError(f"no known format in the first {i + 1} rows of {dataset!r}: {first_error}")
                yield Reject(dataset, row, f"unrecognised format: {exc}", _truncate_raw(record))
                continue
        try:
            rec = _canonical(record, columns)
            prompt, gold, rejected = _extract(rec, locked)
            if rejected is not None and _norm(gold) == _norm(rejected):
                raise _RowError("identical responses: chosen and rejected are the same text")
        except _RowError as exc:
            yield Reject(dataset, row, str(exc), _truncate_raw(record))
            continue
        sid = sample_id(prompt, gold, dataset=dataset)
        key = int(sid, 16)
        if key in seen:
            yield Reject(dataset, row, f"duplicate sample: same prompt and gold as row {seen[key]}",
                         _truncate_raw(record))
            continue
        seen[key] = row
        src = rec.get("source")
        meta: dict[str, Any] = {"format": locked}
        extra = _extra(record, columns)
        if extra:
            meta["extra"] = extra
        yield Sample(sid, dataset, row, prompt, gold, rejected,
                     src if isinstance(src, str) and src else None, meta)
