"""Export a SEAM-filtered subset as TRL preference data (prompt / chosen / rejected) with a dataset card.

Why here and not in the app: the same code path serves the dashboard's export button, notebooks and
tests, and it is where the safety rules live — exports only ever land inside one export folder
(user-given names are reduced to a safe file name and the resolved target is checked to be a direct
child of that folder), the DB is opened read-only, and a half-written export never appears under its
final name (it is built in a hidden staging folder and renamed into place).

Pair construction (documented choice):
- chosen = the sample's gold response.
- rejected = `rejected="hardest"` (default): the worse response of the spec's variant that the spec's
  RM scores highest — the one the RM most confuses with gold, i.e. the most informative negative;
  `rejected="each"`: one row per worse response.
- Hand labels (`labels`, consensus per pair from `analysis.storage.labels.consensus`): when a label on the
  exported (chosen, rejected) pair contradicts the exported preference (the human preferred the
  "rejected" side) `label_policy="drop"` removes the pair and `"flip"` swaps chosen and rejected; a
  human 'tie' is dropped under both. `"ignore"` exports as is. Counts go into the card.

Each export is a folder `<export dir>/<name>/` holding the data (`data.jsonl`, `data.parquet`, or an HF
`datasets` folder written by `Dataset.save_to_disk` under `hf/`), `README.md` (dataset card) and
`card.json` (the same facts, machine-readable: filter, models, variant, thresholds, source DB, n).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis.storage import store
from analysis.queries.base import _df, _exec
from analysis.queries.filtering import FilterSpec, filter_cte

FORMATS = ("jsonl", "parquet", "hf")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportError(ValueError):
    """A user-facing problem with an export request (bad name, existing target, nothing to export)."""


def sanitize_name(name: str) -> str:
    """Reduce a user-given export name to a safe single path component.

    Path separators and anything outside [A-Za-z0-9._-] become '_', leading dots are stripped (no
    hidden files, no '..'), length is capped. Raises ExportError when nothing usable is left.
    """
    base = _SAFE.sub("_", str(name or "").strip().replace("\\", "/").replace("/", "_"))
    base = re.sub(r"\.{2,}", ".", base)            # no '..' anywhere
    base = re.sub(r"^[._-]+|[_-]+$", "", base)      # no hidden / option-like names
    base = base[:100]
    if not base or base in {".", ".."}:
        raise ExportError(f"unusable export name {name!r}: use letters, digits, '.', '_' or '-'")
    return base


def safe_target(export_dir: str | Path, name: str) -> Path:
    """The folder an export named `name` goes to, guaranteed to be a direct child of `export_dir`."""
    root = Path(export_dir).resolve()
    target = (root / sanitize_name(name)).resolve()
    if target.parent != root:
        # e.g. a pre-existing symlink inside the export folder pointing elsewhere
        raise ExportError(f"export target {target} would leave the export folder {root}")
    return target


@dataclass
class ExportResult:
    path: Path
    n: int
    card: dict


def _sql_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def export_subset(db: str | Path, export_dir: str | Path, name: str, spec: FilterSpec, *,
                  keep: str = "kept", fmt: str = "jsonl", rejected: str = "hardest",
                  labels: pd.DataFrame | None = None, label_policy: str = "ignore",
                  include_ids: bool = True, overwrite: bool = False) -> ExportResult:
    """Write the kept (or dropped) samples of a SEAM filter as TRL prompt/chosen/rejected rows.

    Returns the export folder, the number of rows and the card. See the module docstring for how
    pairs are built and how labels are applied.
    """
    if keep not in ("kept", "dropped"):
        raise ExportError("keep must be 'kept' or 'dropped'")
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}")
    if rejected not in ("hardest", "each"):
        raise ExportError("rejected must be 'hardest' or 'each'")
    if label_policy not in ("ignore", "drop", "flip"):
        raise ExportError("label_policy must be 'ignore', 'drop' or 'flip'")
    root = Path(export_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = safe_target(root, name)
    if target.exists() and not overwrite:
        raise ExportError(f"an export named {target.name!r} already exists in {root}")
    staging = root.resolve() / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        card = _write(db, staging, target.name, spec, keep=keep, fmt=fmt, rejected=rejected, labels=labels,
                      label_policy=label_policy, include_ids=include_ids)
        if target.exists():
            trash = root.resolve() / f".trash-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(path=target, n=card["n"], card=card)


def _write(db, staging: Path, name: str, spec: FilterSpec, *, keep, fmt, rejected, labels, label_policy,
           include_ids) -> dict:
    params: dict = {"want_dropped": keep == "dropped"}
    cte = filter_cte(spec, params)
    con = store.connect(db, read_only=True, timeout_s=10)
    try:
        lab = (labels[["a_id", "b_id", "label"]].copy() if labels is not None and len(labels)
               else pd.DataFrame({"a_id": pd.Series(dtype=str), "b_id": pd.Series(dtype=str),
                                  "label": pd.Series(dtype=str)}))
        con.register("_export_labels", lab)
        rank_filter = "WHERE w.rk = 1" if rejected == "hardest" else ""
        _exec(con, f"""
            CREATE OR REPLACE TEMP TABLE _export_pairs AS
            WITH {cte},
            sel AS (SELECT sample_id, v FROM assigned WHERE dropped = $want_dropped),
            g AS (SELECT r.sample_id, r.response_id AS chosen_id, r.text AS chosen, s.score AS chosen_reward
                  FROM responses r JOIN sel USING (sample_id)
                  LEFT JOIN rm_scores s ON s.response_id = r.response_id AND s.reward = $f_reward
                  WHERE r.variant = 'gold'),
            w AS (SELECT r.sample_id, r.response_id AS rejected_id, r.text AS rejected, s.score AS rejected_reward,
                         row_number() OVER (PARTITION BY r.sample_id
                                            ORDER BY s.score DESC NULLS LAST, r.response_id) AS rk
                  FROM responses r JOIN sel USING (sample_id)
                  LEFT JOIN rm_scores s ON s.response_id = r.response_id AND s.reward = $f_reward
                  WHERE r.variant = $f_variant),
            pairs AS (SELECT sm.prompt, g.chosen, w.rejected, sel.sample_id, g.chosen_id, w.rejected_id,
                             g.chosen_reward, w.rejected_reward, sel.v AS metric_value, sm.dataset, sm.source,
                             CASE
                               WHEN l.label IS NULL THEN NULL
                               WHEN l.label = 'tie' THEN 'tie'
                               WHEN (l.label = 'a') = (l.a_id = g.chosen_id) THEN 'chosen'
                               ELSE 'rejected' END AS label_prefers
                      FROM sel JOIN samples sm USING (sample_id) JOIN g USING (sample_id) JOIN w USING (sample_id)
                      LEFT JOIN _export_labels l
                        ON l.a_id = least(g.chosen_id, w.rejected_id) AND l.b_id = greatest(g.chosen_id, w.rejected_id)
                      {rank_filter})
            SELECT * FROM pairs
        """, params)
        counts = _df(con, """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE label_prefers IS NOT NULL) AS labeled,
                   count(*) FILTER (WHERE label_prefers = 'rejected') AS contradicted,
                   count(*) FILTER (WHERE label_prefers = 'tie') AS tied
            FROM _export_pairs""").iloc[0].to_dict()
        if label_policy == "ignore":
            body = "SELECT prompt, chosen, rejected, sample_id, chosen_id, rejected_id, dataset, source, " \
                   "chosen_reward, rejected_reward, metric_value, FALSE AS flipped FROM _export_pairs"
        elif label_policy == "drop":
            body = "SELECT prompt, chosen, rejected, sample_id, chosen_id, rejected_id, dataset, source, " \
                   "chosen_reward, rejected_reward, metric_value, FALSE AS flipped FROM _export_pairs " \
                   "WHERE label_prefers IS NULL OR label_prefers = 'chosen'"
        else:
            body = """SELECT prompt,
                        CASE WHEN label_prefers = 'rejected' THEN rejected ELSE chosen END AS chosen,
                        CASE WHEN label_prefers = 'rejected' THEN chosen ELSE rejected END AS rejected,
                        sample_id,
                        CASE WHEN label_prefers = 'rejected' THEN rejected_id ELSE chosen_id END AS chosen_id,
                        CASE WHEN label_prefers = 'rejected' THEN chosen_id ELSE rejected_id END AS rejected_id,
                        dataset, source,
                        CASE WHEN label_prefers = 'rejected' THEN rejected_reward ELSE chosen_reward END AS chosen_reward,
                        CASE WHEN label_prefers = 'rejected' THEN chosen_reward ELSE rejected_reward END AS rejected_reward,
                        metric_value, label_prefers = 'rejected' AS flipped
                      FROM _export_pairs WHERE label_prefers IS DISTINCT FROM 'tie'"""
        cols = "prompt, chosen, rejected" + (
            ", sample_id, chosen_id, rejected_id, dataset, source, chosen_reward, rejected_reward, metric_value, flipped"
            if include_ids else "")
        final = f"SELECT {cols} FROM ({body}) ORDER BY sample_id, rejected_id"
        n = int(_df(con, f"SELECT count(*) AS n FROM ({final})")["n"][0])
        if n == 0:
            raise ExportError("the selection is empty: nothing to export")
        thresholds = _df(con, f"""
            WITH {cte}
            SELECT min(v) FILTER (WHERE dropped) AS dropped_min, max(v) FILTER (WHERE dropped) AS dropped_max,
                   min(v) FILTER (WHERE NOT dropped) AS kept_min, max(v) FILTER (WHERE NOT dropped) AS kept_max,
                   count(*) FILTER (WHERE dropped) AS n_dropped, count(*) FILTER (WHERE NOT dropped) AS n_kept
            FROM assigned""", params).iloc[0].to_dict()
        if fmt == "jsonl":
            con.execute(f"COPY ({final}) TO {_sql_path(staging / 'data.jsonl')} (FORMAT json)")
            files = ["data.jsonl"]
        elif fmt == "parquet":
            con.execute(f"COPY ({final}) TO {_sql_path(staging / 'data.parquet')} (FORMAT parquet)")
            files = ["data.parquet"]
        else:
            tmp = staging / ".hf-src.parquet"
            con.execute(f"COPY ({final}) TO {_sql_path(tmp)} (FORMAT parquet)")
            files = ["hf/"]
        con.unregister("_export_labels")
    finally:
        con.close()
    if fmt == "hf":
        import datasets  # heavy import, only when asked for
        ds = datasets.Dataset.from_parquet(str(tmp), cache_dir=str(staging / ".hf-cache"))
        ds.save_to_disk(str(staging / "hf"))
        del ds
        tmp.unlink()
        shutil.rmtree(staging / ".hf-cache", ignore_errors=True)
    card = {
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_db": str(Path(db).resolve()),
        "format": fmt,
        "files": files,
        "n": n,
        "subset": keep,
        "filter": spec.as_dict(),
        "models": {"policy": spec.policy, "reward": spec.reward},
        "variant": spec.variant,
        "thresholds": {k: (None if pd.isna(v) else (int(v) if k.startswith("n_") else float(v)))
                       for k, v in thresholds.items()},
        "pairs": {"chosen": "gold response",
                  "rejected": ("worse response of the variant with the highest RM reward" if rejected == "hardest"
                               else "every worse response of the variant (one row each)")},
        "labels": {"policy": label_policy, "pairs_before_labels": int(counts["total"]),
                   "labeled": int(counts["labeled"]), "contradicted_by_label": int(counts["contradicted"]),
                   "label_ties": int(counts["tied"])},
        "columns": ["prompt", "chosen", "rejected"] + ([
            "sample_id", "chosen_id", "rejected_id", "dataset", "source", "chosen_reward", "rejected_reward",
            "metric_value", "flipped"] if include_ids else []),
        "generator": "seam-lens analysis.queries.export",
    }
    (staging / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    (staging / "README.md").write_text(_readme(card))
    return card


def _readme(card: dict) -> str:
    f = card["filter"]
    mode = {"top": f"the top {f['q']:.1%} by {f['metric']} dropped",
            "bottom": f"the bottom {f['q']:.1%} by {f['metric']} dropped",
            "random": f"a random {f['q']:.1%} dropped (seed {f['seed']}, control)"}[f["mode"]]
    data_line = {"jsonl": "`data.jsonl` (one JSON object per line)", "parquet": "`data.parquet`",
                 "hf": "`hf/` (load with `datasets.load_from_disk`)"}[card["format"]]
    t = card["thresholds"]
    lab = card["labels"]
    return f"""---
pretty_name: {json.dumps(card['name'])}
task_categories:
- text-generation
tags:
- preference
- rlhf
- seam-lens
---

# {card['name']}

Preference pairs in TRL format (`prompt`, `chosen`, `rejected`) exported by SEAM Lens.

- **Rows**: {card['n']}
- **Subset**: the **{card['subset']}** samples of a SEAM filter with {mode}
- **Variant** of the worse responses: `{card['variant']}`
- **Policy model (PM)**: `{card['models']['policy']}`; **reward model (RM)**: `{card['models']['reward']}`
- **SEAM definition**: alpha = {f['alpha']}, tau = {f['tau']} ({'hard' if f['tau'] == 0 else 'soft'} hacking indicator)
- **Thresholds**: dropped {f['metric']} in [{t.get('dropped_min')}, {t.get('dropped_max')}] (n = {t.get('n_dropped')}),
  kept in [{t.get('kept_min')}, {t.get('kept_max')}] (n = {t.get('n_kept')})
- **Chosen**: {card['pairs']['chosen']}; **rejected**: {card['pairs']['rejected']}
- **Hand labels**: policy `{lab['policy']}`; {lab['labeled']} of {lab['pairs_before_labels']} pairs labeled,
  {lab['contradicted_by_label']} contradicted by the label, {lab['label_ties']} judged a tie
- **Source DB**: `{card['source_db']}`
- **Created**: {card['created_at']}
- **Data**: {data_line}

All parameters are repeated in `card.json`.
"""
