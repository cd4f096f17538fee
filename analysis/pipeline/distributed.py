"""Scale-out on Ray: the model stages of a precompute as Ray Data `map_batches` over actor pools.

`seam precompute ... --ray ADDRESS|auto|local[:N]` runs the same stages as the single-process job; the
driver (this process) ingests, builds the worse responses and finalizes as usual, and each scoring stage
(one PM or RM at a time) becomes:

    pending responses (DuckDB, in pages)  ->  ray.data.from_arrow_refs  ->  map_batches(BatchScorer,
    one actor per GPU with num_gpus=1, or CPU actors on a CPU-only cluster)  ->  driver writes Parquet
    parts  ->  parts loaded into the DuckDB file with INSERT OR IGNORE

Why this shape:
- The actors run `analysis.pipeline.scoring.BatchScorer`, the class the single-process path calls, so
  both paths compute scores with the same code.
- Only the driver touches the DuckDB file (DuckDB allows one writer process). Scores are small, so the
  workers return them to the driver, which needs no shared file system for the data (the workers still
  need the models: a hub id in their cache, or a path they can all read).
- A part is named by a content hash of the response ids it holds and written atomically (temp file +
  rename), then loaded. Killed driver: the rerun first loads the parts already on disk (a part written but
  not yet loaded is not lost), then scores only what is still missing, so it ends with the same rows.
  Killed worker: Ray Data restarts the actor and retries its batch (actor pools default to unlimited
  restarts and task retries). A model's parts are deleted once all of its scores are in the DB.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from analysis.data.ingest import content_id
from analysis.pipeline.scoring import INFO_COLUMN, TABLES, BatchScorer, ScorerSpec
from analysis.storage import store

if TYPE_CHECKING:
    from analysis.pipeline.precompute import Precompute

#: object store of a `--ray local` instance (it spills to disk beyond this); env SEAM_RAY_OBJECT_STORE_MB
LOCAL_OBJECT_STORE_MB = 512
#: driver environment passed on to the workers (offline model loading, quiet tokenizers)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME",
                 "SEAM_LOCK_TIMEOUT")


def parse_address(value: str) -> tuple[str, int | None]:
    """'local' -> ('local', None); 'local:2' -> ('local', 2); anything else -> (value, None).

    `auto` joins the cluster started on this node with `ray start`; `ray://host:10001` or `host:6379`
    joins a remote one; `local[:N]` starts a private instance with N CPUs for this run."""
    value = value.strip()
    if value == "local" or value.startswith("local:"):
        _, _, n = value.partition(":")
        if not n:
            return "local", None
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--ray {value}: expected local or local:N with N >= 1 CPUs (e.g. local:2)")
        return "local", int(n)
    if not value:
        raise ValueError("--ray needs an address: auto (the cluster on this node), HOST:PORT, ray://HOST:PORT, "
                         "or local[:N]")
    return value, None


_STARTED_LOCAL = False


def init_ray(address: str) -> None:
    """Connect to (or start) the Ray instance named by `--ray`; once per process."""
    global _STARTED_LOCAL
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install -e '.[ray]' (on the driver and on every worker node)") from None
    if ray.is_initialized():
        return
    addr, cpus = parse_address(address)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kw: dict = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "configure_logging": False}
    if addr == "local":
        mb = int(os.environ.get("SEAM_RAY_OBJECT_STORE_MB", LOCAL_OBJECT_STORE_MB))
        ray.init(address="local", num_cpus=cpus, object_store_memory=mb << 20, include_dashboard=False, **kw)
        _STARTED_LOCAL = True
    else:
        ray.init(address=addr, **kw)


def shutdown() -> None:
    """Stop the private instance a `--ray local` run started (a cluster's connection is left to exit)."""
    global _STARTED_LOCAL
    if _STARTED_LOCAL:
        import ray
        ray.shutdown()
        _STARTED_LOCAL = False


def actor_pool(cfg_cpus: int) -> tuple[dict, int]:
    """map_batches resources and pool size: one replica per GPU (num_gpus=1) when the cluster has GPUs,
    else CPU actors of `cfg_cpus` cores each, as many as the cluster's CPUs hold."""
    import ray
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus > 0:
        return {"num_gpus": 1, "num_cpus": 1}, gpus
    cpus = int(res.get("CPU", 1))
    return {"num_cpus": cfg_cpus}, max(1, cpus // cfg_cpus)


def parts_dir(db: Path, spec: ScorerSpec) -> Path:
    """Where the parts of one model's scores go: next to the DB, one folder per (table, model settings)."""
    key = content_id(json.dumps(spec.to_dict(), sort_keys=True))
    return Path(db).parent / f"{Path(db).name}.parts" / spec.table / key


def write_part(folder: Path, table: pa.Table) -> Path:
    """Write `table` atomically as `<hash of its response ids>.parquet` (same rows -> same file)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted(table.column("response_id").to_pylist())
    target = folder / f"{content_id(*ids)}.parquet"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)
    return target


def _pages(db: Path, kind: str, ref: str, dataset: str, page_samples: int) -> Iterator[pa.Table]:
    """The responses `ref` has not scored, as (response_id, prompt, text) tables, one per page.

    A page is a fixed run of `page_samples` samples of the dataset in sample_id order, the same on every
    rerun: a page is committed whole (one part), so a resumed run scores exactly the pages a clean run
    would, with the same inputs per model call and so the same numbers. Rows are in the single-process
    path's order, so a prompt's responses share one call (the PM runs the prompt once for all of them)."""
    table, col = TABLES[kind]
    con = store.connect(db)
    try:
        reader = con.sql(
            f"""
            WITH pages AS (SELECT sample_id, (row_number() OVER (ORDER BY sample_id) - 1) // {int(page_samples)}
                                  AS page FROM samples WHERE dataset = ?)
            SELECT p.page, r.response_id, s.prompt, r.text
            FROM responses r JOIN samples s USING (sample_id) JOIN pages p USING (sample_id)
            WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.response_id = r.response_id AND t.{col} = ?)
            ORDER BY r.sample_id, r.response_id
            """, params=[dataset, ref]).to_arrow_reader(8192)
        current, pieces = None, []
        for rb in reader:
            pages = rb.column(0).to_numpy()
            cuts = [0, *(np.flatnonzero(pages[1:] != pages[:-1]) + 1).tolist(), len(pages)]
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                if pieces and pages[lo] != current:
                    yield pa.Table.from_batches(pieces).drop_columns(["page"])
                    pieces = []
                current = pages[lo]
                pieces.append(rb.slice(lo, hi - lo))
        if pieces:
            yield pa.Table.from_batches(pieces).drop_columns(["page"])
    finally:
        con.close()


def _count_pending(db: Path, kind: str, ref: str, dataset: str) -> tuple[int, int]:
    """(responses `ref` has not scored yet, samples of the dataset)."""
    table, col = TABLES[kind]
    con = store.connect(db)
    try:
        return con.execute(
            f"SELECT (SELECT count(*) FROM responses r JOIN samples s USING (sample_id) WHERE s.dataset = ?"
            f" AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.response_id = r.response_id AND t.{col} = ?)),"
            f" (SELECT count(*) FROM samples WHERE dataset = ?)", [dataset, ref, dataset]).fetchone()
    finally:
        con.close()


def _remove_parts(folder: Path) -> None:
    """Delete one model's parts once its scores are all in the DB, and the parts folders left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty (another model's parts) or already gone
            break


def score_on_ray(pc: "Precompute", kind: str, ref: str) -> int:
    """Score every response of the run's dataset that `ref` has not scored, on Ray; returns rows added."""
    import ray

    cfg = pc.cfg
    init_ray(cfg.ray)
    spec = ScorerSpec.from_config(cfg, kind, ref)
    folder = parts_dir(cfg.db, spec)
    # Parts a killed driver wrote but did not load (or loaded in a transaction that never committed).
    store.load_parts(cfg.db, spec.table, sorted(folder.glob("*.parquet")))
    total, n_samples = _count_pending(cfg.db, kind, ref, cfg.name)
    if total == 0:
        _remove_parts(folder)
        return 0
    remote_args, n_actors = actor_pool(cfg.ray_actor_cpus)
    # One block per page and batch_size=None: each model call gets exactly one page. Pages are sized from
    # the dataset (not from what is left), so a rerun cuts the same pages; small datasets get smaller
    # pages so that every actor gets work.
    page_samples = max(1, min(cfg.page_samples, math.ceil(n_samples / (4 * n_actors))))
    blocks = [ray.put(t) for t in _pages(cfg.db, kind, ref, cfg.name, page_samples)]
    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    scored = ray.data.from_arrow_refs(blocks).map_batches(
        BatchScorer, fn_constructor_kwargs={"spec": spec.to_dict(), "with_info": True},
        batch_size=None, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors),
        **remote_args)
    pc.log(f"ray: {total} responses to score (dataset: {n_samples} samples) for {kind} {ref} on {n_actors} actor(s) "
           f"{remote_args}, pages of {page_samples} samples")
    recorded = False
    done = 0
    # Each output block is one scored page: written as a part and loaded at once (one commit per page, the
    # resume unit of the single-process path too).
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        if not recorded:  # before the first part: a rerun that finds parts also finds the model recorded
            pc._record_model(ref, {"pm": "policy", "rm": "reward"}[kind],
                             json.loads(batch.column(INFO_COLUMN)[0].as_py()))
            recorded = True
        part = batch.drop_columns([INFO_COLUMN]).select(list(store.COLUMNS[spec.table]))
        store.load_parts(cfg.db, spec.table, [write_part(folder, part)])
        done += part.num_rows
        if kind == "pm":
            pc.stats.pm_tokens += pa.compute.sum(part.column("n_tokens")).as_py() or 0
    del blocks
    left = _count_pending(cfg.db, kind, ref, cfg.name)[0]
    if left:
        raise RuntimeError(f"ray: {left} responses still unscored by {ref} after the stage; rerun to resume")
    _remove_parts(folder)
    if kind == "pm":
        pc.stats.add("pm_scored_on_ray", done)
    return done
