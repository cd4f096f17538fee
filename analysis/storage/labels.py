"""Durable hand labels for spot-checks, and the statistics built on them.

Why SQLite and not the results DB: the DuckDB file is written by the precompute and opened read-only by
the app (one writer process at a time); labels are written by people, one click at a time, from any
number of browser sessions, and must survive a refresh, a restart or a crash the moment they are given.
SQLite in WAL mode with `synchronous=FULL` commits each label to disk before the click returns, lets
readers and a writer work at once, and is a single file that lives next to the DB
(`<db stem>.labels.sqlite`).

Labels are keyed by content ids: the two response ids (content hashes, stable across re-ingestion and
machines) in canonical order (a_id < b_id) plus the annotator. A label says which of a / b is better,
'tie', or 'skip' (seen, not judged). Which side was shown on the left is recorded too (to audit
position bias), as is every change in an append-only history table.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import pandas as pd

from analysis.stats.metrics import cohen_kappa  # noqa: F401  (re-exported: the app imports it from here)
from analysis.stats.metrics import Z95, wilson_bounds

VALID = ("a", "b", "tie", "skip")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    a_id        TEXT NOT NULL,
    b_id        TEXT NOT NULL,
    annotator   TEXT NOT NULL,
    label       TEXT NOT NULL CHECK (label IN ('a', 'b', 'tie', 'skip')),
    kind        TEXT,              -- policy (two PM samples) | dataset (gold vs worse)
    sample_id   TEXT,
    shown_left  TEXT,              -- response id displayed on the left
    session     TEXT,              -- the queue it came from (kind/seed/...) for resuming
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (a_id, b_id, annotator),
    CHECK (a_id < b_id)
);
CREATE TABLE IF NOT EXISTS label_history (
    a_id TEXT, b_id TEXT, annotator TEXT, label TEXT, kind TEXT, sample_id TEXT, shown_left TEXT,
    session TEXT, at TEXT
);
CREATE INDEX IF NOT EXISTS labels_by_annotator ON labels (annotator);
CREATE TABLE IF NOT EXISTS final_labels (   -- adjudicated pairs: the recorded final label overrides the votes
    a_id        TEXT NOT NULL,
    b_id        TEXT NOT NULL,
    label       TEXT NOT NULL CHECK (label IN ('a', 'b', 'tie')),
    adjudicator TEXT NOT NULL,
    note        TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (a_id, b_id),
    CHECK (a_id < b_id)
);
"""

COLUMNS = ["a_id", "b_id", "annotator", "label", "kind", "sample_id", "shown_left", "session",
           "created_at", "updated_at"]


def default_path(db: str | Path) -> Path:
    """Where labels for a results DB live by default: `<db dir>/<db stem>.labels.sqlite`."""
    db = Path(db)
    return db.with_name(db.stem + ".labels.sqlite")


@functools.lru_cache(maxsize=64)
def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in `folder`, found by doing it: a read-only mount refuses root too,
    where permission bits and os.access would say yes."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seam-write-probe-"):
            return True
    except OSError:
        return False


def fallback_path(db: str | Path) -> Path:
    """A per-user labels file for a DB whose folder cannot be written (a shared, read-only results
    folder): `$XDG_CACHE_HOME` (else ~/.cache) `/seam-lens/labels/<db stem>-<hash of the DB's absolute
    path>.labels.sqlite`, so two read-only DBs never share labels and the same DB always finds its own."""
    db = Path(db).expanduser().resolve()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seam-lens" / "labels"
    return root / f"{db.stem}-{hashlib.sha256(str(db).encode()).hexdigest()[:16]}.labels.sqlite"


def labels_path_for(db: str | Path) -> tuple[Path, bool]:
    """(labels file, True when it is the fallback): next to the DB when that folder takes a new file,
    else `fallback_path(db)`. A missing folder counts as writable (nothing to label yet)."""
    default = default_path(db)
    folder = default.parent
    if not folder.is_dir() or _can_create_in(folder.resolve()):
        return default, False
    return fallback_path(db), True


def annotator_name(annotator: str | None) -> str:
    """The one normal form of an annotator name (surrounding whitespace dropped), applied by every
    LabelStore method that takes a name, so `put("alice ")` and `delete("alice ")` address the same row
    (undo did nothing when only `put` stripped). Raises ValueError when nothing is left."""
    name = (annotator or "").strip()
    if not name:
        raise ValueError("an annotator name is required")
    return name


def canonical(a_id: str, b_id: str, label: str) -> tuple[str, str, str]:
    """Order the pair so a_id < b_id, flipping an 'a'/'b' label to match."""
    if label not in VALID:
        raise ValueError(f"label must be one of {VALID}, not {label!r}")
    if a_id == b_id:
        raise ValueError("a pair needs two different responses")
    if a_id < b_id:
        return a_id, b_id, label
    return b_id, a_id, {"a": "b", "b": "a"}.get(label, label)


class LabelStore:
    """One SQLite file of labels. Opens a connection per operation (cheap), so it is safe to use from
    Streamlit's script threads and from several processes at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.executescript(_SCHEMA)
            con.commit()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=10.0)
        con.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a label that returned is on disk even if the
        # machine loses power right after.
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=10000")
        return con

    def put(self, a_id: str, b_id: str, annotator: str, label: str, *, kind: str | None = None,
            sample_id: str | None = None, shown_left: str | None = None, session: str | None = None) -> None:
        """Record (or replace) one annotator's label of one pair; committed before returning.

        `label` refers to the pair as passed ('a' = the first id is better); it is re-expressed in
        canonical order before storing.
        """
        annotator = annotator_name(annotator)
        a, b, lab = canonical(a_id, b_id, label)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with closing(self._connect()) as con:
            with con:  # one transaction: label + history, committed (and fsynced) on exit
                con.execute(
                    """INSERT INTO labels (a_id, b_id, annotator, label, kind, sample_id, shown_left, session,
                                           created_at, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (a_id, b_id, annotator) DO UPDATE SET
                           label = excluded.label, shown_left = excluded.shown_left,
                           session = excluded.session, updated_at = excluded.updated_at""",
                    (a, b, annotator, lab, kind, sample_id, shown_left, session, now, now))
                con.execute("INSERT INTO label_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (a, b, annotator, lab, kind, sample_id, shown_left, session, now))

    def delete(self, a_id: str, b_id: str, annotator: str) -> None:
        """Remove one label (undo); the history keeps a 'deleted' entry."""
        annotator = annotator_name(annotator)
        a, b = sorted((a_id, b_id))
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with closing(self._connect()) as con:
            with con:
                con.execute("DELETE FROM labels WHERE a_id = ? AND b_id = ? AND annotator = ?", (a, b, annotator))
                con.execute("INSERT INTO label_history (a_id, b_id, annotator, label, at) VALUES (?, ?, ?, 'deleted', ?)",
                            (a, b, annotator, now))

    def all(self) -> pd.DataFrame:
        """Every current label (one row per pair x annotator)."""
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM labels ORDER BY updated_at").fetchall()
        return pd.DataFrame(rows, columns=COLUMNS)

    def labeled_pairs(self, annotator: str) -> set[tuple[str, str]]:
        """(a_id, b_id) pairs this annotator has already labeled (skips included) — for resuming."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT a_id, b_id FROM labels WHERE annotator = ?",
                               (annotator_name(annotator),)).fetchall()
        return {(a, b) for a, b in rows}

    def put_final(self, a_id: str, b_id: str, label: str, adjudicator: str, note: str = "") -> None:
        """Record the adjudicated label of a pair annotators disagreed on (replaces an earlier one)."""
        if label not in ("a", "b", "tie"):
            raise ValueError(f"a final label is 'a', 'b' or 'tie', not {label!r}")
        adjudicator = annotator_name(adjudicator)
        a, b, lab = canonical(a_id, b_id, label)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with closing(self._connect()) as con:
            with con:
                con.execute("INSERT OR REPLACE INTO final_labels VALUES (?, ?, ?, ?, ?, ?)",
                            (a, b, lab, adjudicator, note, now))

    def finals(self) -> pd.DataFrame:
        """Adjudicated labels: a_id, b_id, label, adjudicator, note, at."""
        cols = ["a_id", "b_id", "label", "adjudicator", "note", "at"]
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT {', '.join(cols)} FROM final_labels ORDER BY at").fetchall()
        return pd.DataFrame(rows, columns=cols)

    def import_labels(self, rows: pd.DataFrame) -> int:
        """Put labels coming from another tool (see `parse_labels`); returns how many were stored."""
        n = 0
        for r in rows.itertuples():
            self.put(r.a_id, r.b_id, r.annotator, r.label, kind=getattr(r, "kind", None) or None,
                     sample_id=getattr(r, "sample_id", None) or None,
                     shown_left=getattr(r, "shown_left", None) or None, session="import")
            n += 1
        return n

    def annotators(self) -> list[str]:
        with closing(self._connect()) as con:
            return [r[0] for r in con.execute("SELECT DISTINCT annotator FROM labels ORDER BY 1").fetchall()]


# ---------------------------------------------------------------------------------------------------
# statistics

def consensus(labels: pd.DataFrame, finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One label per pair from all annotators: the adjudicated final label where one was recorded, else
    the majority of the non-skip labels.

    Pairs where annotators split evenly between different answers get no consensus and are left out
    (counted in `n_split` of the result's attrs). Columns: a_id, b_id, kind, sample_id, label,
    n_annotators.
    """
    cols = ["a_id", "b_id", "kind", "sample_id", "label", "n_annotators"]
    if labels is None or labels.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["n_split"] = 0
        return out
    judged = labels[labels["label"].isin(["a", "b", "tie"])]
    out_rows, split = [], 0
    final = {} if finals is None or finals.empty else {(r.a_id, r.b_id): r.label for r in finals.itertuples()}
    for (a, b), g in judged.groupby(["a_id", "b_id"], sort=True):
        if (a, b) in final:
            out_rows.append((a, b, g["kind"].iloc[0], g["sample_id"].iloc[0], final[(a, b)], len(g)))
            continue
        counts = g["label"].value_counts()
        top = counts[counts == counts.max()]
        if len(top) > 1:
            split += 1
            continue
        out_rows.append((a, b, g["kind"].iloc[0], g["sample_id"].iloc[0], top.index[0], len(g)))
    out = pd.DataFrame(out_rows, columns=cols)
    out.attrs["n_split"] = split
    return out


def disagreements(labels: pd.DataFrame, finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pairs whose annotators gave different non-skip labels (for adjudication), one row per pair:
    a_id, b_id, kind, sample_id, votes ('alice: a; bob: b'), n_annotators, final (adjudicated label or '')."""
    cols = ["a_id", "b_id", "kind", "sample_id", "votes", "n_annotators", "final"]
    if labels is None or labels.empty:
        return pd.DataFrame(columns=cols)
    final = {} if finals is None or finals.empty else {(r.a_id, r.b_id): r.label for r in finals.itertuples()}
    judged = labels[labels["label"].isin(["a", "b", "tie"])]
    rows = []
    for (a, b), g in judged.groupby(["a_id", "b_id"], sort=True):
        if g["label"].nunique() > 1:
            votes = "; ".join(f"{r.annotator}: {r.label}" for r in g.sort_values("annotator").itertuples())
            rows.append((a, b, g["kind"].iloc[0], g["sample_id"].iloc[0], votes, len(g), final.get((a, b), "")))
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------------
# export / import: CSV, JSONL, Argilla- and Label Studio-compatible JSON

EXPORT_FORMATS = ("csv", "jsonl", "argilla", "labelstudio")
_LS_CHOICE = {"a": "A", "b": "B", "tie": "Tie", "skip": "Skip"}


def export_labels(labels: pd.DataFrame, fmt: str, texts: dict[str, str] | None = None,
                  prompts: dict[str, str] | None = None) -> str:
    """Labels as text in `fmt`. 'argilla': one record per pair (fields prompt / response_a / response_b,
    each annotator's answer to the question 'preference'); 'labelstudio': one task per pair (data + one
    annotation per annotator with a `choices` result). `texts` (response id -> text) and `prompts`
    (sample id -> prompt) fill the fields other tools show; ids always travel, so an import maps back."""
    import json as _json
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}")
    labels = labels if labels is not None else pd.DataFrame(columns=COLUMNS)
    if fmt == "csv":
        return labels[COLUMNS].to_csv(index=False)
    if fmt == "jsonl":
        return "".join(_json.dumps({c: (None if pd.isna(v) else v) for c, v in r.items()}) + "\n"
                       for r in labels[COLUMNS].to_dict("records"))
    texts, prompts = texts or {}, prompts or {}
    out = []
    for (a, b), g in labels.groupby(["a_id", "b_id"], sort=True):
        sid = g["sample_id"].iloc[0]
        data = {"prompt": prompts.get(sid, ""), "response_a": texts.get(a, ""), "response_b": texts.get(b, ""),
                "a_id": a, "b_id": b, "sample_id": sid, "kind": g["kind"].iloc[0]}
        if fmt == "argilla":
            out.append({"id": f"{a}|{b}",
                        "fields": {k: data[k] for k in ("prompt", "response_a", "response_b")},
                        "metadata": {k: data[k] for k in ("a_id", "b_id", "sample_id", "kind")},
                        "responses": {"preference": [{"user_id": r.annotator, "value": r.label}
                                                     for r in g.itertuples()]}})
        else:
            out.append({"data": data, "annotations": [
                {"completed_by": r.annotator, "result": [{"from_name": "preference", "to_name": "prompt",
                                                          "type": "choices",
                                                          "value": {"choices": [_LS_CHOICE[r.label]]}}]}
                for r in g.itertuples()]})
    return _json.dumps(out, indent=1)


def parse_labels(text: str, fmt: str) -> pd.DataFrame:
    """Labels from another tool's file (the formats of `export_labels`): a_id, b_id, annotator, label,
    kind, sample_id, shown_left. Raises ValueError naming the first unusable entry."""
    import io as _io
    import json as _json
    cols = ["a_id", "b_id", "annotator", "label", "kind", "sample_id", "shown_left"]
    back = {v: k for k, v in _LS_CHOICE.items()}
    rows: list[dict] = []
    if fmt == "csv":
        df = pd.read_csv(_io.StringIO(text), dtype=str, keep_default_na=False)
        rows = df.to_dict("records")
    elif fmt == "jsonl":
        rows = [_json.loads(line) for line in text.splitlines() if line.strip()]
    elif fmt in ("argilla", "labelstudio"):
        items = _json.loads(text)
        if not isinstance(items, list):
            raise ValueError(f"a {fmt} file is a JSON list of records")
        for it in items:
            if fmt == "argilla":
                meta = it.get("metadata") or {}
                for r in (it.get("responses") or {}).get("preference", []):
                    rows.append({**meta, "annotator": r.get("user_id"), "label": r.get("value")})
            else:
                data = it.get("data") or {}
                for ann in it.get("annotations") or []:
                    for res in ann.get("result") or []:
                        choice = ((res.get("value") or {}).get("choices") or [None])[0]
                        rows.append({**data, "annotator": ann.get("completed_by"),
                                     "label": back.get(choice, str(choice).lower())})
    else:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}")
    out = []
    for i, r in enumerate(rows, 1):
        if not r.get("a_id") or not r.get("b_id") or r.get("label") not in VALID or not str(r.get("annotator") or "").strip():
            raise ValueError(f"entry {i}: needs a_id, b_id, annotator and a label in {VALID}; got "
                             f"{ {k: r.get(k) for k in ('a_id', 'b_id', 'annotator', 'label')} }")
        out.append({c: (str(r.get(c)) if r.get(c) not in (None, "") else None) for c in cols})
    return pd.DataFrame(out, columns=cols)


def kappa_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators on the pairs both judged (skips excluded).

    Columns: annotator_1, annotator_2, n_shared, agreement, kappa.
    """
    cols = ["annotator_1", "annotator_2", "n_shared", "agreement", "kappa"]
    if labels is None or labels.empty:
        return pd.DataFrame(columns=cols)
    judged = labels[labels["label"].isin(["a", "b", "tie"])]
    rows = []
    for r1, r2 in combinations(sorted(judged["annotator"].unique()), 2):
        m = judged[judged["annotator"] == r1].merge(judged[judged["annotator"] == r2], on=["a_id", "b_id"])
        x, y = list(m["label_x"]), list(m["label_y"])
        agree = (sum(a == b for a, b in zip(x, y)) / len(x)) if x else math.nan
        rows.append((r1, r2, len(x), agree, cohen_kappa(x, y)))
    return pd.DataFrame(rows, columns=cols)


def screen_side(labels: pd.DataFrame) -> pd.Series:
    """Each label as the annotator gave it on screen: 'A (left)', 'B (right)', 'tie' or 'skip'.

    Why: labels are stored in canonical order (a_id < b_id), which is not the side shown; counting the
    stored 'a' / 'b' said a = 15, b = 1 after nine presses of A and seven of B."""
    def side(r) -> str:
        if r["label"] not in ("a", "b"):
            return r["label"]
        better = r["a_id"] if r["label"] == "a" else r["b_id"]
        if r.get("shown_left") is None or pd.isna(r.get("shown_left")):
            return f"{r['label']} (side not recorded)"
        return "A (left)" if better == r["shown_left"] else "B (right)"
    if labels is None or labels.empty:
        return pd.Series([], dtype=object)
    return labels.apply(side, axis=1)


def side_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: how often they chose A (left), B (right), tie, skip. Columns: annotator, then sides."""
    order = ["A (left)", "B (right)", "tie", "skip"]
    if labels is None or labels.empty:
        return pd.DataFrame(columns=["annotator", *order])
    t = labels.assign(side=screen_side(labels)).groupby(["annotator", "side"]).size().unstack(fill_value=0)
    for c in order:
        if c not in t:
            t[c] = 0
    return t[order + [c for c in t.columns if c not in order]].reset_index()


def planning_rate(wrong: int, n: int, z: float = Z95) -> float:
    """The rate the sample-size planner assumes: the point of the current Wilson 95% interval closest to 0.5
    (the worst case still compatible with the labels). Why not the point estimate: after one label it is
    0 or 1, where the interval is narrow, and the planner said '34 more' when hundreds are needed."""
    if n <= 0:
        return 0.5
    lo, hi = wilson_bounds(wrong, n, z)
    return min(max(0.5, lo), hi)


def wilson_half_width(p: float, n: int, z: float = Z95) -> float:
    """Half the width of the Wilson 95% interval at proportion p and n labels."""
    if n <= 0:
        return math.inf
    k = p * n
    lo, hi = wilson_bounds(k, n, z)
    return (hi - lo) / 2


def labels_needed(p: float | None, half_width: float, n_now: int = 0, z: float = Z95) -> int:
    """How many more labels bring the Wilson 95% half-width to ≤ `half_width` at rate p.

    p unknown (no labels yet) -> 0.5, the worst case. Searches n exactly (the Wilson width is not the
    Wald formula). Returns 0 when already there.
    """
    if not 0 < half_width < 0.5:
        raise ValueError("half_width must be in (0, 0.5)")
    if p is None or math.isnan(p):
        p = 0.5
    lo, hi = 1, 1
    while wilson_half_width(p, hi, z) > half_width:
        hi *= 2
        if hi > 10**9:
            return 10**9
    while lo < hi:
        mid = (lo + hi) // 2
        if wilson_half_width(p, mid, z) <= half_width:
            hi = mid
        else:
            lo = mid + 1
    return max(0, lo - int(n_now))
