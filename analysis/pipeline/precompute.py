"""The precompute job: dataset -> samples -> worse responses -> PM / RM scores -> SEAM, in DuckDB.

Each stage asks the DB what is still missing and only does that, committing one unit at a time
(a chunk of ingested rows, a batch of generations, a page of scored samples). So a run killed at any
point (SIGKILL included) resumes where it stopped when the same command is rerun, and a finished run
rerun is a no-op. The final `seam_metrics` table is recomputed from the scores at the end of every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import gc
import json
import platform
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from analysis.storage import store
from analysis.pipeline import preflight
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.runner import StageRunner
from analysis.data.ingest import (ColumnMap, Reject, Sample, content_id, legacy_sample_id, open_records, parse_records,
                                  response_id)

PACKAGES = ("seam-lens", "torch", "transformers", "duckdb", "sentence-transformers", "umap-learn",
            "numpy", "pandas", "gguf", "datasets", "streamlit")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def hash_unit(sample_id: str) -> float:
    """Deterministic position of a sample in [0, 1): used by --fraction."""
    return int(sample_id[:8], 16) / 16**8


def row_key(dataset: str, source_row: int) -> str:
    """A hex key for an input row that has no sample id (a malformed row), so --fraction selects rejects as
    it selects samples: a 1% run no longer reports every malformed row of the whole file."""
    return hashlib.sha256(f"{dataset}\0{source_row}".encode()).hexdigest()


def selected(key: str, cfg) -> bool:
    """Whether --fraction keeps the row with this hex key (a sample id or `row_key`)."""
    return cfg.fraction is None or hash_unit(key) < cfg.fraction


@dataclass
class RunStats:
    """What a run did, stage by stage: stored as the run summary and printed at the end."""
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pm_tokens: int = 0
    pm_seconds: float = 0.0

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class Precompute:
    """Runs the stages in order. Models are loaded one at a time and released after their stage."""

    def __init__(self, cfg: PrecomputeConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.db = cfg.db
        self.log = log
        self.stats = RunStats()
        self.run_id = uuid.uuid4().hex[:12]
        self._encoder = None
        self._pm = None

    # ------------------------------------------------------------ orchestration
    def run(self) -> dict:
        cfg = self.cfg
        self._reuse_stored_refs()
        with StageRunner(self.db, "precompute", cfg.to_dict(), package_versions(), log=self.log,
                         run_id=self.run_id) as runner:
            self.stats.timings = runner.timings   # the runner times the stages; the summary reports them
            runner.failure_info = lambda: {k: v for k, v in self.stats.__dict__.items() if k != "timings"}
            for name, stage in [("ingest", self.ingest), ("embed", self.embed_prompts),
                                ("contrast", self.build_contrast), ("adv", self.build_adv),
                                ("generated", self.build_generated), ("policy_samples", self.build_policy_samples),
                                ("pm_scores", self.score_policies), ("rm_scores", self.score_rewards),
                                ("prompt_map", self.build_prompt_map), ("finalize", self.finalize)]:
                runner.stage(name, stage)
            return runner.finish(self.summary(), self.model_records())

    def _reuse_stored_refs(self) -> None:
        """A DB written before references were stored absolute names a model as it was typed (e.g.
        `cache/models/rm`). When the same reference is typed again, keep using that stored name, so its rows
        and scores are reused instead of scored a second time under the absolute path."""
        cfg = self.cfg
        if not self.db.exists():
            return
        con = store.connect(self.db)
        try:
            stored = {(m, r) for m, r in con.execute("SELECT model, role FROM models").fetchall()}
        finally:
            con.close()
        back = {canon: typed for canon, typed in cfg.given_refs.items()
                if canon != typed and ((typed, "policy") in stored or (typed, "reward") in stored)}
        if back:
            cfg.policies = [back.get(r, r) for r in cfg.policies]
            cfg.rewards = [back.get(r, r) for r in cfg.rewards]
            cfg.generator = back.get(cfg.generator, cfg.generator) if cfg.generator else None
            cfg.given_refs.update({t: t for t in back.values()})

    def _pbar(self, **kw):
        return tqdm(disable=not self.cfg.progress, dynamic_ncols=True, **kw)

    # ------------------------------------------------------------ ingest
    def ingest(self) -> None:
        cfg = self.cfg
        records = open_records(cfg.dataset, split=cfg.split, data_dir=cfg.data_dir)
        columns = ColumnMap.parse(cfg.columns) if cfg.columns else None
        samples: list[dict] = []
        responses: list[tuple] = []
        rejects: list[dict] = []
        n_kept = n_rows = n_unselected = 0
        limit_reached = False
        fmt_seen: set[str] = set()
        legacy = store.legacy_sample_ids(self.db, cfg.name) if self.db.exists() else set()

        def flush() -> None:
            with store.writer(self.db) as con:
                store.insert(con, "datasets", [(cfg.name, cfg.format if cfg.format != "auto" else
                                                ",".join(sorted(fmt_seen)) or "auto", cfg.dataset)])
                store.insert(con, "samples", samples)
                store.insert(con, "responses", responses)
                store.insert(con, "rejects", rejects)
            samples.clear(), responses.clear(), rejects.clear()

        bar = self._pbar(desc="ingest", unit="row")
        for item in parse_records(records, dataset=cfg.name, fmt=cfg.format, columns=columns):
            bar.update(1)
            n_rows += 1
            if legacy and isinstance(item, Sample):
                old = legacy_sample_id(item.prompt, item.gold)
                if old in legacy:  # stored by an older version under its old id: keep that id
                    item = dataclasses.replace(item, sample_id=old)
            if isinstance(item, Reject) and not selected(row_key(item.dataset, item.source_row), cfg):
                n_unselected += 1  # a malformed row outside the --fraction: left out, not a reject
            elif isinstance(item, Reject):
                rejects.append({"dataset": item.dataset, "source_row": item.source_row,
                                "reason": item.reason, "raw": item.raw})
                self.stats.add("rejects")
            else:
                if not selected(item.sample_id, cfg):
                    n_unselected += 1
                    continue
                fmt_seen.add(str(item.meta.get("format", cfg.format)))
                samples.append(self._sample_row(item))
                responses.append((response_id(item.sample_id, "gold", item.gold), item.sample_id,
                                  "gold", 0, item.gold, {}))
                if "rejected" in cfg.variants and item.rejected:
                    responses.append((response_id(item.sample_id, "rejected", item.rejected),
                                      item.sample_id, "rejected", 0, item.rejected, {"source": "dataset"}))
                n_kept += 1
            if len(samples) + len(rejects) >= 2000:
                flush()
            if cfg.limit is not None and n_kept >= cfg.limit:
                limit_reached = True
                break
        bar.close()
        if n_rows == 0:
            raise ValueError(f"dataset {cfg.dataset!r} has no rows (empty file, empty array or split?); "
                             "nothing to score: pass a dataset with rows")
        flush()
        with store.writer(self.db) as con:
            con.execute("INSERT OR REPLACE INTO not_selected VALUES (?, ?, ?)", [cfg.name, n_unselected, limit_reached])
        self.stats.counts["samples"] = n_kept
        self.stats.counts["not_selected"] = n_unselected
        self.log(f"ingest: {n_kept} samples, {self.stats.counts.get('rejects', 0)} rejected rows")

    @staticmethod
    def _sample_row(s: Sample) -> dict:
        return {"sample_id": s.sample_id, "dataset": s.dataset, "source_row": s.source_row,
                "source": s.source, "prompt": s.prompt, "gold": s.gold, "rejected": s.rejected,
                "meta": s.meta}

    def _samples(self) -> list[tuple[str, str, str, str | None]]:
        con = store.connect(self.db)
        try:
            return store.iter_samples(con, self.cfg.name)
        finally:
            con.close()

    # ------------------------------------------------------------ embeddings / contrast / adv
    @property
    def encoder(self):
        if self._encoder is None:
            from analysis.models.embed import Encoder
            self._encoder = Encoder(self.cfg.encoder, device=self.cfg.device)
        return self._encoder

    def embed_prompts(self) -> None:
        """Prompt embeddings feed contrast retrieval and the prompt map; skipped when neither is on."""
        if "contrast" not in self.cfg.variants and not self.cfg.umap:
            return
        con = store.connect(self.db)
        try:
            todo = con.execute(
                "SELECT s.sample_id, s.prompt FROM samples s WHERE s.dataset = ? AND NOT EXISTS"
                " (SELECT 1 FROM prompt_embeddings e WHERE e.sample_id = s.sample_id) ORDER BY s.source_row",
                [self.cfg.name]).fetchall()
        finally:
            con.close()
        for start in range(0, len(todo), 4096):
            chunk = todo[start:start + 4096]
            emb = self.encoder.encode([p for _, p in chunk], progress=self.cfg.progress)
            with store.writer(self.db) as con:
                store.insert(con, "prompt_embeddings", [(sid, e.tolist()) for (sid, _), e in zip(chunk, emb)])

    def build_contrast(self) -> None:
        cfg = self.cfg
        if "contrast" not in cfg.variants:
            return
        from analysis.data.worse import contrast_neighbours
        samples = self._samples()
        con = store.connect(self.db)
        try:
            done = store.existing_variant_samples(con, "contrast", cfg.name)
            if len(done) >= len(samples):
                return
            ids = [s[0] for s in samples]
            emb_rows = dict(con.execute(
                "SELECT sample_id, embedding FROM prompt_embeddings WHERE sample_id IN"
                " (SELECT sample_id FROM samples WHERE dataset = ?)", [cfg.name]).fetchall())
        finally:
            con.close()
        prompt_emb = np.asarray([emb_rows[i] for i in ids], dtype=np.float32)
        answers = [s[2] for s in samples]
        answer_emb = self.encoder.encode(answers, progress=cfg.progress)
        neigh = contrast_neighbours(prompt_emb, answer_emb, cfg.k, threshold=cfg.contrast_threshold,
                                    answers=answers)
        rows = []
        for (sid, _, _, _), nb in zip(samples, neigh):
            if sid in done:
                continue
            if len(nb) < cfg.k:
                self.stats.add("contrast_short")
            for idx, (j, sim) in enumerate(nb):
                text = answers[j]
                rows.append((response_id(sid, "contrast", text), sid, "contrast", idx, text,
                             {"neighbour": ids[j], "similarity": round(float(sim), 4),
                              "threshold": cfg.contrast_threshold}))
        with store.writer(self.db) as con:
            store.insert(con, "responses", rows)
        self.stats.add("contrast_responses", len(rows))

    def build_adv(self) -> None:
        cfg = self.cfg
        if "adv" not in cfg.variants:
            return
        from analysis.data.worse import adversarial
        con = store.connect(self.db)
        try:
            done = store.existing_variant_samples(con, "adv", cfg.name)
        finally:
            con.close()
        rows = []
        for sid, _, gold, _ in self._samples():
            if sid in done:
                continue
            for idx, (text, prov) in enumerate(adversarial(gold, cfg.k, seed=f"{cfg.seed}:{sid}")):
                rows.append((response_id(sid, "adv", text), sid, "adv", idx, text, prov))
        with store.writer(self.db) as con:
            store.insert(con, "responses", rows)
        self.stats.add("adv_responses", len(rows))

    # ------------------------------------------------------------ generation
    def _load_policy(self, ref: str):
        """The PM for `ref`, keeping only the most recent one loaded: generation, policy sampling and
        scoring reuse it instead of reloading (minutes for a 7B model), and memory holds one PM at a time."""
        if self._pm is not None and self._pm.ref == ref:
            return self._pm
        from analysis.models.policy import PolicyConfig, PolicyModel
        self._pm = None
        gc.collect()
        self._pm = PolicyModel(ref, self.cfg.models_path,
                               PolicyConfig(device=self.cfg.device, dtype=self.cfg.dtype,
                                            max_length=self.cfg.max_length, token_budget=self.cfg.token_budget))
        self._record_model(ref, "policy", self._pm.info())
        return self._pm

    def _record_model(self, ref: str, role: str, info: dict) -> None:
        """Store a loaded model's info (from this process, or from a Ray worker that loaded it)."""
        from analysis.models.resolve import weights_sha256
        resolved = str(info.get("path", ref))
        if Path(resolved).exists():
            resolved = str(Path(resolved).absolute())
        sha = weights_sha256(resolved) if Path(resolved).exists() else ""
        info = {**info, "given": self.cfg.given_refs.get(ref, ref)}
        with store.writer(self.db) as con:
            store.upsert_model(con, ref, role, resolved, sha, info)

    def _generate(self, variant: str, generator: str, n: int, instruction: str | None) -> None:
        """Sample `n` responses per prompt in fixed batches (fixed by sample order, seeded per batch),
        committing one batch at a time, so a resumed run produces exactly the same texts."""
        cfg = self.cfg
        samples = self._samples()
        con = store.connect(self.db)
        try:
            done = store.existing_variant_samples(con, variant, cfg.name, generator=generator)
        finally:
            con.close()
        bs = cfg.gen_batch_size
        batches = [samples[i:i + bs] for i in range(0, len(samples), bs)]
        todo = [(bi, b) for bi, b in enumerate(batches) if any(s[0] not in done for s in b)]
        if not todo:
            return
        if cfg.generator_backend == "vllm":
            from analysis.models.policy import VLLMGenerator
            pm = VLLMGenerator.from_ref(generator, cfg.models_path, cfg.dtype, cfg.max_length)
        else:
            pm = self._load_policy(generator)
        bar = self._pbar(desc=f"{variant} ({generator})", total=sum(len(b) for _, b in todo), unit="prompt")
        for bi, batch in todo:
            outs = pm.generate_detailed([s[1] for s in batch], n=n, instruction=instruction,
                                        max_new_tokens=cfg.gen_max_new_tokens, temperature=cfg.gen_temperature,
                                        top_p=cfg.gen_top_p,
                                        seed=int(content_id(str(cfg.seed), generator, variant, str(bi))[:8], 16),
                                        batch_size=bs, progress=False)
            rows = []
            for (sid, _, gold, _), gens in zip(batch, outs):
                if sid in done:
                    continue
                for idx, (text, n_tokens, truncated) in enumerate(gens):
                    # An empty answer (EOS first) is what the PM wrote: kept and scored like any other, so
                    # every prompt has its n samples whatever the sampler drew (dropping them made the
                    # number of best-of-N prompts depend on float noise in the first token's logits).
                    empty = not text.strip()
                    if empty:
                        self.stats.add(f"{variant}_empty")
                    prov = {"generator": generator, "temperature": cfg.gen_temperature, "top_p": cfg.gen_top_p,
                            "max_new_tokens": cfg.gen_max_new_tokens, "seed": cfg.seed, "batch": bi,
                            "batch_size": bs, "backend": cfg.generator_backend, "n_tokens": n_tokens,
                            "truncated": truncated, "empty": empty,
                            "instruction": instruction, "same_as_gold": text.strip() == gold.strip()}
                    # generator and index in the id: two PMs (or two draws) writing the same text are
                    # distinct samples, not one response silently deduplicated away
                    rid = response_id(sid, f"{variant}:{generator}:{idx}", text)
                    rows.append((rid, sid, variant, idx, text, prov))
            with store.writer(self.db) as con:
                store.insert(con, "responses", rows)
            self.stats.add(f"{variant}_responses", len(rows))
            self.stats.add(f"{variant}_truncated", sum(r[5]["truncated"] for r in rows))
            bar.update(len(batch))
        bar.close()
        del pm  # a vLLM engine holds most of the GPU: free it before the PM is loaded for scoring
        gc.collect()

    def build_generated(self) -> None:
        cfg = self.cfg
        if "generated" not in cfg.variants:
            return
        generator = cfg.generator or (cfg.policies[0] if cfg.policies else None)
        if generator is None:
            raise ValueError("variant 'generated' needs --generator or at least one --policy")
        from analysis.models.policy import WORSE_ANSWER_INSTRUCTION
        self._generate("generated", generator, cfg.gen_k or cfg.k, WORSE_ANSWER_INSTRUCTION)

    def build_policy_samples(self) -> None:
        if self.cfg.policy_samples <= 0:
            return
        for ref in self.cfg.policies:
            self._generate("policy", ref, self.cfg.policy_samples, None)

    # ------------------------------------------------------------ scoring
    def _score_pages(self, kind: str, ref: str, score_fn) -> None:
        """Score every response of the dataset that has no score from `ref`, one page per commit."""
        cfg = self.cfg
        con = store.connect(self.db)
        try:
            table, col = {"pm": ("pm_scores", "policy"), "rm": ("rm_scores", "reward")}[kind]
            total = con.execute(
                f"SELECT count(*) FROM responses r JOIN samples s USING (sample_id) WHERE s.dataset = ?"
                f" AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.response_id = r.response_id AND t.{col} = ?)",
                [cfg.name, ref]).fetchone()[0]
        finally:
            con.close()
        if total == 0:
            return
        bar = self._pbar(desc=f"{kind} {ref}", total=total, unit="resp")
        after = ""
        while True:
            con = store.connect(self.db)
            try:
                page = store.pending_scores(con, kind, ref, cfg.name, after=after, limit=cfg.page_samples)
            finally:
                con.close()
            if not page:
                break
            rows = score_fn(page)
            with store.writer(self.db) as con:
                store.insert(con, table, rows)
            after = page[-1][0]
            bar.update(len(page))
        bar.close()

    def score_policies(self) -> None:
        if self.cfg.ray:
            from analysis.pipeline.distributed import score_on_ray
            self._pm = None  # the workers load their own replicas: free the driver's copy
            gc.collect()
            for ref in self.cfg.policies:
                score_on_ray(self, "pm", ref)
            return
        from analysis.pipeline.scoring import BatchScorer, ScorerSpec
        for ref in self.cfg.policies:
            scorer = BatchScorer(ScorerSpec.from_config(self.cfg, "pm", ref), model=self._load_policy(ref))

            def fn(page, scorer=scorer):
                t0 = time.perf_counter()
                rows = scorer.rows(page)
                self.stats.pm_seconds += time.perf_counter() - t0
                self.stats.pm_tokens += sum(r[3] for r in rows)
                self.stats.add("pm_unscorable_too_long", sum(1 for r in rows if r[2] != r[2]))
                return rows

            self._score_pages("pm", ref, fn)
            del scorer, fn  # so the next PM's load can free this one
        self._pm = None  # RMs come next: release the PM
        gc.collect()

    def score_rewards(self) -> None:
        """RMs on one frozen encoder (the demo's) are loaded together and share one encoder pass per page.
        On Ray each RM is scored by its own actor pool (one RM per replica)."""
        if self.cfg.ray:
            from analysis.pipeline.distributed import score_on_ray
            for ref in self.cfg.rewards:
                score_on_ray(self, "rm", ref)
            return
        from analysis.models.reward import RewardModel, score_shared, shared_backbone_groups
        for group in shared_backbone_groups(self.cfg.rewards):
            rms = [RewardModel(ref, device=self.cfg.device, dtype=self.cfg.dtype, batch_size=self.cfg.rm_batch_size)
                   for ref in group]
            for ref, rm in zip(group, rms):
                self._record_model(ref, "reward", rm.info())

            def fn(page, rms=rms, group=group):
                scores = score_shared(rms, [p[2] for p in page], [p[3] for p in page])
                return [(p[1], ref, float(s)) for ref, col in zip(group, scores) for p, s in zip(page, col)]

            for ref in group:  # pages pending for the first RM score all of them; later ones find little left
                self._score_pages("rm", ref, fn)
            del rms, fn
            gc.collect()

    # ------------------------------------------------------------ map / finalize
    def build_prompt_map(self) -> None:
        if not self.cfg.umap:
            return
        con = store.connect(self.db)
        try:
            missing = con.execute(
                "SELECT count(*) FROM prompt_embeddings e WHERE NOT EXISTS"
                " (SELECT 1 FROM prompt_map m WHERE m.sample_id = e.sample_id)").fetchone()[0]
            if not missing:
                return
            rows = con.execute("SELECT sample_id, embedding FROM prompt_embeddings ORDER BY sample_id").fetchall()
        finally:
            con.close()
        from analysis.models.embed import umap_coords
        emb = np.asarray([r[1] for r in rows], dtype=np.float32)
        self.log(f"prompt map: UMAP of {len(rows)} prompts")
        xy = umap_coords(emb, seed=self.cfg.seed)
        with store.writer(self.db) as con:
            con.execute("DELETE FROM prompt_map")
            store.insert(con, "prompt_map", [(sid, float(x), float(y)) for (sid, _), (x, y) in zip(rows, xy)])

    def finalize(self) -> None:
        with store.writer(self.db) as con:
            store.finalize(con)

    # ------------------------------------------------------------ reporting
    def model_records(self) -> dict:
        con = store.connect(self.db)
        try:
            return {f"{role}:{m}": {"sha256": sha, "resolved": res}
                    for m, role, res, sha in con.execute("SELECT model, role, resolved, sha256 FROM models").fetchall()}
        finally:
            con.close()

    def summary(self) -> dict:
        s = self.stats
        con = store.connect(self.db)
        try:
            counts = store.table_counts(con)
            rejects = dict(con.execute(
                "SELECT split_part(reason, ':', 1) AS kind, count(*) FROM rejects WHERE dataset = ?"
                " GROUP BY kind ORDER BY 2 DESC",
                [self.cfg.name]).fetchall())
            seam = con.execute(
                "SELECT variant, policy, reward, count(*), avg(seam), median(seam), avg(hack_rate)"
                " FROM seam_metrics GROUP BY ALL ORDER BY ALL").fetchall()
        finally:
            con.close()
        return {
            "run_id": self.run_id, "timings_s": s.timings, "counts": s.counts, "table_rows": counts,
            "rejects_by_reason": rejects, "notes": s.notes,
            "pm_tokens": s.pm_tokens,
            "pm_tokens_per_s": round(s.pm_tokens / s.pm_seconds, 1) if s.pm_seconds else None,
            "seam_by_variant": [
                {"variant": v, "policy": p, "reward": r, "n": n, "mean_seam": m, "median_seam": md,
                 "hack_rate": hr} for v, p, r, n, m, md, hr in seam],
        }


def run_precompute(cfg: PrecomputeConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a precompute; returns the run summary stored in `runs`."""
    if cfg.generator_backend == "vllm":  # before any work: vLLM missing or no CUDA is one line, not a late crash
        from analysis.models.policy import require_vllm
        require_vllm()
    preflight.check_precompute(cfg)
    try:
        return Precompute(cfg, log).run()
    finally:
        if cfg.ray:
            from analysis.pipeline.distributed import shutdown
            shutdown()


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
