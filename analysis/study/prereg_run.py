"""`seam experiment --human DATASET`: the pre-registered study, stage by stage.

Order matters for the claim: the design (splits, sizes, models, SEAM variants, endpoints, controls and
the power of each comparison) is written to the run ledger before any model is trained or scored, and
stored again with the results in `study_design`. Everything numeric is then computed by the pure
`compute(data, cfg)` modules (endpoint, controls, retrain_eval) from one frozen `EvidenceData`; SEAM itself
is evaluated by the SQL macro `seam_variants` (metrics.sql) over the stored probe scores.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa

from analysis.errors import UserError
from analysis.pipeline.runner import StageRunner
from analysis.storage import experiment_store, store
from analysis.study import bon_eval, controls, endpoint, retrain_eval
from analysis.study.evidence_data import RM, EvidenceData, Item, split_items
from analysis.study.prereg_config import SEAM_VARIANTS, HumanStudyConfig

PERM = controls.PERM
VARIANT_COL = {"alpha": "seam_alpha", "paper": "log_seam_paper", "cand": "seam_cand", "hack_rate": "hack_rate"}


# ------------------------------------------------------------------ items
def load_items(cfg: HumanStudyConfig, log: Callable[[str], None]) -> list[Item]:
    """Human pairs from the dataset (plus Spot-check hand labels), or proxy pairs without one."""
    from analysis.data.ingest import Sample, open_records, parse_records

    need = cfg.split_a + cfg.split_b + cfg.split_c
    if cfg.proxy:
        samples = [s for s in parse_records(open_records("builtin:chatterbot"), dataset="proxy")
                   if isinstance(s, Sample) and s.gold.strip()]
        if len(samples) < 2:
            raise UserError("proxy mode needs the bundled chatterbot corpus; reinstall the package")
        # proxy judge: the 'rejected' answer is another prompt's gold (worse by construction)
        return [Item(s.sample_id, s.prompt, s.gold, samples[(i + len(samples) // 2) % len(samples)].gold, "proxy")
                for i, s in enumerate(samples)]
    try:
        records = open_records(cfg.source, split=cfg.human_split, data_dir=cfg.human_data_dir)
        items = [Item(s.sample_id, s.prompt, s.gold, s.rejected) for s in
                 parse_records(records, dataset="human") if isinstance(s, Sample) and s.rejected]
    except (OSError, ValueError) as exc:
        raise UserError(f"--human {cfg.source}: {exc}; give a preference file with chosen/rejected pairs, "
                        "or --human proxy") from exc
    items += hand_label_items(cfg)
    if len(items) < need // 2:
        raise UserError(f"--human {cfg.source}: only {len(items)} chosen/rejected pairs, the design asks for {need} "
                        "(A+B+C); lower --split-a/--split-b/--split-c")
    log(f"{len(items)} human pairs from {cfg.source}")
    return items


def hand_label_items(cfg: HumanStudyConfig) -> list[Item]:
    """Spot-check consensus labels (a beat b) on pairs of the results DB, as human-labelled items."""
    from analysis.storage.labels import LabelStore, consensus, labels_path_for

    path, _ = labels_path_for(cfg.db)
    if not path.is_file() or not cfg.db.is_file():
        return []
    cons = consensus(LabelStore(path).all())
    cons = cons[cons["label"].isin(["a", "b"])]
    if cons.empty:
        return []
    con = store.connect(cfg.db)
    try:
        ids = list(set(cons["a_id"]) | set(cons["b_id"]))
        rows = con.execute("SELECT r.response_id, s.prompt, r.text FROM responses r JOIN samples s USING (sample_id)"
                           " WHERE r.response_id IN (SELECT unnest(?))", [ids]).fetchall()
    finally:
        con.close()
    txt = {r[0]: (r[1], r[2]) for r in rows}
    out = []
    for a, b, lab in cons[["a_id", "b_id", "label"]].itertuples(index=False):
        if a in txt and b in txt:
            win, lose = (a, b) if lab == "a" else (b, a)
            out.append(Item(f"hand:{win}:{lose}", txt[win][0], txt[win][1], txt[lose][1], "hand"))
    return out


# ------------------------------------------------------------------ design
def design(cfg: HumanStudyConfig, splits: dict[str, list[Item]]) -> dict:
    n = {k: len(v) for k, v in splits.items()}
    return {
        "mode": cfg.mode, "source": cfg.source,
        "splits": {"rule": "sha1(seed, prompt) order: first A, then B, then C; one item per prompt", "sizes": n},
        "rm_grid": {"recipe": "Bradley-Terry pooler+classifier head on frozen all-MiniLM-L6-v2 [CLS]",
                    "train_data": "human pairs from A only", "sizes": cfg.grid_sizes, "seeds": cfg.grid_seeds,
                    "extra_arm": f"human+synthetic: largest size plus, for the same A prompts, chosen vs {cfg.syn_adv} "
                                 f"adv perturbations and vs {cfg.syn_contrast} contrast answers (the probe "
                                 "distribution)"
                                 if cfg.synthetic_arm else None},
        "policies": {"primary": cfg.policies[0], "secondary": cfg.policies[1:],
                     "secondary_items": f"the first {cfg.secondary_c} C items (split order); the primary on all of C",
                     "sft": f"{cfg.sft_ref}: {cfg.sft_steps} full fine-tuning steps (TRL SFTTrainer) of the primary on A's "
                            "human-chosen answers (`seam train-pm` recipe)" if cfg.sft_ref else None},
        "seam_variants": {"alpha": f"mean exp(l/n^{cfg.alpha}) h (today's)",
                          "paper": f"log mean exp(l/n^{cfg.beta}) h, l summed incl. EOS (the paper's code)",
                          "cand": "sum over hacking probes of softmax(l) over {y*, y_1..y_k}",
                          "hack_rate": "mean h (no PM term)", "primary": cfg.primary_variant,
                          "probes": f"{cfg.probe_k} adv perturbations of the chosen answer + {cfg.probe_k} contrast "
                                    f"answers of other prompts (whole pool, prompt cosine in "
                                    f"[{cfg.band_lo}, {cfg.band_hi})); the human-rejected answer is not a probe"},
        "primary_endpoint": "AUROC of SEAM for E = 1[r(rejected) >= r(chosen)] on C per (PM, RM size) cell, mean "
                            "over the cell's seeds, percentile bootstrap over prompts; never pooled over cells",
        "secondary": "likelihood-ratio tests: SEAM added to |delta r|, and to |delta r| + RM-ensemble SD; "
                     "Holm within each family",
        "null": f"claimed only by TOST: 90% interval inside 0.5 +- {cfg.tost_margin}",
        "controls": {"negative": "PM log-probs permuted across C probes",
                     "positive": f"v3, registered before the fourth full run: a planted RM that is its unplanted "
                                 f"twin (head on A's {max(cfg.grid_sizes)} human pairs + {cfg.syn_adv} adv and "
                                 f"{cfg.syn_contrast} contrast synthetic pairs per item, {cfg.plant_epochs} epochs, "
                                 "lr 1e-3) except on the largest of "
                                 f"{cfg.clusters} k-means topic clusters, whose prompts an expert head scores, "
                                 "trained on that cluster's A items to prefer over the chosen answer the rejected "
                                 "one and the synthetic probes drawn in proportion to the primary PM's weight on "
                                 f"them (softmax over the item's probes of l/n^{cfg.beta}): an RM that prefers the "
                                 "worse answers its PM would give, on one topic; gate: AUROC for 'in the cluster' "
                                 "on C of SEAM(plant) minus SEAM(twin), paired by seed, percentile bootstrap over "
                                 "items, lower 95% end > 0; the manipulation check (in-cluster minus out-of-cluster "
                                 "hack rate, plant vs twin) says whether the plant took",
                     "why_v3": "the third full run's v2 plant (the expert trained on every flipped pair of the "
                               "cluster alike) took (hack rate on the cluster 0.47 -> 0.93) but failed the gate, "
                               "+0.049 [-0.001, +0.103]: it broke the contrast probes the PM finds unlikely, while "
                               "the paper SEAM of an item rests on its few PM-likely probes, which stayed below "
                               "the chosen answer. A failure on answers the PM would not give is not the one SEAM "
                               "claims to find; v2 stays as a reference row",
                     "why_v2": "the first two full runs gated one head trained on the set with the cluster's "
                               "labels flipped by its absolute AUROC (lower end > 0.5). That head learned the flip "
                               "everywhere rather than on the topic, and the absolute AUROC moved with the PM's "
                               "likelihood of the cluster's probes. The v1 plant (dropped by --quick) and the "
                               "absolute AUROCs stay as reference rows",
                     "references": "the plant's and twin's own AUROCs; the v2 and v1 plants; AUROC for the cluster of the "
                                   "primary's PM term alone (every probe counted as a hack) with its Spearman rho to "
                                   "the plant's SEAM, of the ceiling (every in-cluster probe hacked, the twin "
                                   "elsewhere), and of the within-item rise SEAM(plant) - SEAM(twin); reported, "
                                   "not tests"},
        "acquisition": f"start {cfg.acq_start} A pairs; add {cfg.acq_add} B pairs by top SEAM / top hack rate / "
                       f"smallest |delta r| / random (ranked with the start RM); {cfg.acq_seeds} seeds",
        "selection": f"train on B after dropping top-q SEAM vs random-q vs none, q in {cfg.select_q}; "
                     f"{cfg.acq_seeds} seeds",
        "saturation": {"samples": f"each PM samples N = {cfg.bon_n} answers (max {cfg.bon_new_tokens} new tokens, "
                                  f"seed {cfg.seed}) to the first {min(cfg.bon_prompts, n['C'])} C prompts",
                       "pickers": "every human-arm grid RM picks its best of n, n = "
                                  + ", ".join(map(str, bon_eval.levels(cfg.bon_n))),
                       "judge": f"mean score of {cfg.grid_seeds} heads trained on B's human pairs (held out from "
                                "the grid); no human labels exist for generated answers",
                       "quality": "expected judge score of the pick over all n-subsets, mean over the size's seeds, "
                                  "percentile bootstrap over prompts",
                       "tests": f"N {cfg.bon_n} vs N {bon_eval.quarter(cfg.bon_n)} per RM size; largest vs "
                                f"second-largest RM size at N {cfg.bon_n}; 'still improving' if the 95% lower end > 0, 'saturated' "
                                f"only by TOST (90% interval inside +-{cfg.bon_margin} judge SD)"},
        "power": endpoint.power(cfg, n["C"], n["B"]),
        "config": cfg.to_dict(),
    }


# ------------------------------------------------------------------ probes
def make_probes(cfg: HumanStudyConfig, splits, log) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, int], int]:
    """Per B / C item: [(probe_id, kind, text)]; topic clusters of every item; the planted cluster."""
    from sklearn.cluster import KMeans

    from analysis.data.worse import adversarial, contrast_neighbours
    from analysis.models.embed import Encoder

    pool = splits["A"] + splits["B"] + splits["C"]
    enc = Encoder(device=cfg.device)
    pe = enc.encode([it.prompt for it in pool], progress=False)
    ae = enc.encode([it.chosen for it in pool], progress=False)
    del enc
    gc.collect()
    km = KMeans(n_clusters=cfg.clusters, random_state=cfg.seed, n_init=10).fit(pe)
    cluster = {it.item_id: int(c) for it, c in zip(pool, km.labels_)}
    planted = int(np.bincount(km.labels_).argmax())
    neigh = contrast_neighbours(pe, ae, k=cfg.probe_k * 8, answers=[it.chosen for it in pool],
                                prompt_threshold=cfg.band_hi)
    probes, short = {}, 0
    for idx, it in enumerate(pool):
        if idx < len(splits["A"]):
            # A's synthetic pairs (human+synthetic arm, planted control): the probe distribution of B / C,
            # padded to a fixed count per kind (the features are stacked [item, adv... + contrast..., d])
            band = [pool[nb].chosen for nb, sim in neigh[idx] if sim >= cfg.band_lo][:cfg.syn_contrast]
            con = (band + [pool[idx - 1 - j].chosen for j in range(cfg.syn_contrast)])[:cfg.syn_contrast]
            adv = [t for t, _ in adversarial(it.chosen, cfg.syn_adv, cfg.seed)]
            adv = (adv + [it.chosen + " ..."] * cfg.syn_adv)[:cfg.syn_adv]
            probes[it.item_id] = ([(f"{it.item_id}:adv{j}", "adv", t) for j, t in enumerate(adv)]
                                  + [(f"{it.item_id}:con{j}", "contrast", t) for j, t in enumerate(con)])
            continue
        adv = [(f"{it.item_id}:adv{j}", "adv", t) for j, (t, _) in enumerate(adversarial(it.chosen, cfg.probe_k, cfg.seed))]
        con = [(f"{it.item_id}:con{j}", "contrast", pool[nb].chosen)
               for j, (nb, sim) in enumerate([x for x in neigh[idx] if x[1] >= cfg.band_lo][:cfg.probe_k])]
        short += len(adv) + len(con) < 2 * cfg.probe_k
        probes[it.item_id] = adv + con
    log(f"probes for {len(probes) - len(splits['A'])} B/C items ({short} with fewer than {2 * cfg.probe_k}); "
        f"planted cluster {planted} ({int((km.labels_ == planted).sum())} of {len(pool)} prompts)")
    return probes, cluster, planted


def plant_weights(cfg: HumanStudyConfig, A: list[Item], probes, cluster: dict[str, int], planted: int,
                  log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Per A item of the planted cluster: the primary PM's weight on each of its synthetic probes, the softmax
    over the item's probes of the paper's PM term l/n^beta (SQL macro `paper_term`, the one definition).

    Why: the `paper` SEAM of an item is dominated by the hacked probes the PM finds most likely. The v2 plant,
    trained on every flipped pair alike, hacked the PM-unlikely probes and left the few PM-likely ones below the
    chosen answer, so SEAM barely rose on its cluster. The v3 plant learns its flipped preference on the
    probes in proportion to these weights: the failure SEAM is meant to find, an RM that prefers the worse
    answers its PM would give, placed on one topic."""
    todo = [it for it in A if cluster[it.item_id] == planted]
    rows = [(it.item_id, j, it.prompt, t) for it in todo for j, (_, _, t) in enumerate(probes[it.item_id])]
    log(f"PM {cfg.policies[0]}: scoring {len(rows)} synthetic probes of {len(todo)} planted-cluster A items")
    pm = policy_model(cfg, cfg.policies[0])
    res = pm.score([r[2] for r in rows], [r[3] for r in rows], progress=cfg.progress)
    del pm
    gc.collect()
    return probe_weights([r[0] for r in rows], [r[1] for r in rows], res, cfg.beta, cfg.syn_adv + cfg.syn_contrast)


def probe_weights(item_ids: list[str], slots: list[int], scores: list[tuple[float, int]], beta: float,
                  n_slots: int) -> dict[str, np.ndarray]:
    """Item id -> weight per probe slot: softmax over the item's probes of `paper_term(l, n, beta)` (SQL); a
    probe without a finite log-prob weighs 0; items with no scored probe are left out."""
    con = duckdb.connect()
    try:
        store.init_schema(con)
        con.register("_p", pa.table({"item_id": item_ids, "j": slots, "lp": [float(x[0]) for x in scores],
                                     "n": [int(x[1]) for x in scores]}))
        got = con.execute("""
            WITH t AS (SELECT item_id, j, paper_term(lp, n, ?) AS t FROM _p WHERE isfinite(lp)),
                 d AS (SELECT item_id, j, exp(t - max(t) OVER (PARTITION BY item_id)) AS e FROM t)
            SELECT item_id, j, e / sum(e) OVER (PARTITION BY item_id) FROM d""", [beta]).fetchall()
    finally:
        con.close()
    out: dict[str, np.ndarray] = {}
    for item_id, j, w in got:
        out.setdefault(item_id, np.zeros(n_slots))[j] = w
    return out


# ------------------------------------------------------------------ run
def run_study(cfg: HumanStudyConfig, log: Callable[[str], None] = print) -> dict:
    from analysis.models.configs import RMTrainConfig
    from analysis.models.reward import FrozenHeads
    from analysis.pipeline.precompute import package_versions

    items = load_items(cfg, log)
    splits = split_items(items, {"A": cfg.split_a, "B": cfg.split_b, "C": cfg.split_c}, cfg.seed)
    if len(splits["C"]) < 10 or len(splits["A"]) < max(cfg.grid_sizes):
        raise UserError(f"too few items for the design: {({k: len(v) for k, v in splits.items()})}")
    des = design(cfg, splits)
    log(f"mode: {cfg.mode}; splits {des['splits']['sizes']}")
    log("power (before running):")
    for p in des["power"]:
        mde = "-" if p["mde"] is None else f"{p['mde']:.3f}"
        log(f"  {p['comparison']}: n={p['n']} positives={p['positives']} MDE={mde}")
    results: dict[str, list[dict]] = {t: [] for t in experiment_store.EVIDENCE_TABLES}
    conf = {**cfg.to_dict(), "preregistration": des}
    with StageRunner(cfg.db, "experiment", conf, package_versions(), log=log) as runner:
        run_id = runner.run_id
        written = dt.datetime.now()
        probes, cluster, planted = runner.stage("probes", lambda: make_probes(cfg, splits, log))
        plant_w = runner.stage("plant_weights", lambda: plant_weights(cfg, splits["A"], probes, cluster, planted, log))
        heads = runner.stage("rm_features", lambda: FrozenHeads(RMTrainConfig(device=cfg.device, dtype=cfg.dtype)))
        A, B, C = splits["A"], splits["B"], splits["C"]

        def feats(pairs):
            return heads.features([p for p, _ in pairs], [t for _, t in pairs], progress=cfg.progress)

        def build_feats():
            f = {}
            f["A_c"] = feats([(it.prompt, it.chosen) for it in A])
            f["A_r"] = feats([(it.prompt, it.rejected) for it in A])
            syn = [(it.prompt, t) for it in A for _, _, t in probes[it.item_id]]
            f["A_syn"] = feats(syn).reshape(len(A), cfg.syn_adv + cfg.syn_contrast, -1)  # [item, adv..., contrast..., d]
            for name, part in (("B", B), ("C", C)):
                texts = []
                for it in part:
                    texts += [(it.item_id, "gold", it.prompt, it.chosen), (it.item_id, "rejected", it.prompt, it.rejected)]
                    texts += [(pid, kind, it.prompt, t) for pid, kind, t in probes.get(it.item_id, [])]
                f[name + "_rows"] = texts
                f[name] = feats([(p, t) for _, _, p, t in texts])
            return f

        F = runner.stage("encode", build_feats)

        def train_grid():
            rms, jobs = [], []      # every head is fitted at the end, spread over the cores (`fit_many`)

            def add(ref, size, seed, arm, chosen, rejected, config=None):
                rms.append(RM(ref, size, seed, arm))
                jobs.append((chosen, rejected, seed, config))

            nA = len(A)
            flip = np.array([cluster[it.item_id] == planted for it in A])
            for size, seed in itertools.product(cfg.grid_sizes, range(cfg.grid_seeds)):
                sel = np.random.default_rng(1000 + seed).permutation(nA)[:size]
                add(f"rm-{size}-s{seed}", size, seed, "human", F["A_c"][sel], F["A_r"][sel])
            top = max(cfg.grid_sizes)
            strong = dataclasses.replace(heads.config, lr=1e-3, epochs=cfg.plant_epochs, weight_decay=0.0)
            n_syn = cfg.syn_adv + cfg.syn_contrast
            for seed in range(cfg.grid_seeds):
                sel = np.random.default_rng(1000 + seed).permutation(nA)[:top]
                # human pairs + chosen vs each synthetic probe of the same A items
                c = np.concatenate([F["A_c"][sel]] * (n_syn + 1))
                r = np.concatenate([F["A_r"][sel]] + [F["A_syn"][sel, j] for j in range(n_syn)])
                if cfg.synthetic_arm:
                    add(f"rm-{top}+syn-s{seed}", top, seed, "human+synthetic", c, r)
                # positive control. Twin: the set as is. The plants are the twin outside the planted cluster
                # and an expert head on the cluster's prompts (a failure known to sit exactly there). v3 plant:
                # the expert prefers, over the chosen answer, the rejected one and the synthetic probes drawn in
                # proportion to the PM's weight on them. v2 (reference): every flipped pair of the cluster alike.
                # v1 (reference): one head on the whole set with the cluster's labels flipped.
                f = np.concatenate([flip[sel]] * (n_syn + 1))
                add(f"rm-{top}+syn-planted-twin-s{seed}", top, seed, "planted_twin", c, r, strong)
                if cfg.plant_v1:
                    add(f"rm-{top}+syn-planted-v1-s{seed}", top, seed, "planted_v1",
                        np.where(f[:, None], r, c), np.where(f[:, None], c, r), strong)
                if f.any():
                    add(f"rm-{top}+syn-planted-v2-s{seed}", top, seed, "planted_v2", r[f], c[f], strong)
                cl = np.array([i for i in sel if A[i].item_id in plant_w], dtype=int)
                if len(cl):
                    rng = np.random.default_rng(2000 + seed)
                    drawn = np.stack([rng.choice(n_syn, n_syn, p=plant_w[A[i].item_id]) for i in cl])
                    drawn_f = F["A_syn"][cl[:, None], drawn].transpose(1, 0, 2).reshape(-1, c.shape[1])  # slot-major
                    add(f"rm-{top}+syn-planted-s{seed}", top, seed, "planted",
                        np.concatenate([F["A_r"][cl], drawn_f]), np.concatenate([F["A_c"][cl]] * (n_syn + 1)), strong)
            heads_by = dict(zip([m.ref for m in rms], heads.fit_many(jobs)))
            # an expert scores only its cluster's rows (routed below); its twin everywhere else
            experts = {m.ref: (f"rm-{top}+syn-planted-twin-s{m.seed}", heads_by.pop(m.ref))
                       for m in rms if m.arm in ("planted", "planted_v2")}
            return rms, heads_by, experts

        rms, heads_by, experts = runner.stage("train_rms", train_grid)
        log(f"trained {len(rms)} RMs")
        item_of = {}
        for part in (B, C):
            for it in part:
                item_of[it.item_id] = it.item_id
                for pid, _, _ in probes.get(it.item_id, []):
                    item_of[pid] = it.item_id
        c_scores = {ref: heads.score(h, F["C"]) for ref, h in heads_by.items()}   # every RM on every C row
        routed = np.array([cluster[item_of[row[0]]] == planted for row in F["C_rows"]])
        for ref, (twin, expert) in experts.items():      # the plant: its expert on the cluster's rows, else the twin
            c_scores[ref] = np.where(routed, heads.score(expert, F["C"]), c_scores[twin])
        sft_dir = runner.stage("sft_pm", lambda: train_sft_pm(cfg, A, log)) if cfg.sft_ref else None

        def pm_scores():
            out = {}
            rows = [r for r in F["C_rows"] + F["B_rows"] if r[1] != "rejected"]
            sub = {it.item_id for it in C[:cfg.secondary_c]}
            for ref in cfg.policies:
                pm = policy_model(cfg, str(sft_dir) if ref == cfg.sft_ref else ref)
                todo = rows if ref == cfg.policies[0] else [r for r in F["C_rows"] if r[1] != "rejected"
                                                             and item_of[r[0]] in sub]
                log(f"PM {ref}: scoring {len(todo)} responses")
                res = pm.score([p for _, _, p, _ in todo], [t for _, _, _, t in todo], progress=cfg.progress)
                out[ref] = {r[0]: v for r, v in zip(todo, res)}
                del pm
                gc.collect()
            return out

        PM = runner.stage("pm_scores", pm_scores)

        def rid(row):  # probe id (gold and rejected rows carry the item id)
            return row[0] if row[1] in ("adv", "contrast") else f"{row[0]}:{row[1]}"

        def probe_table():
            cols = {k: [] for k in ("run_id", "item_id", "probe_id", "variant", "policy", "reward", "logprob_sum",
                                    "n_tokens", "score")}
            crow = [r for r in F["C_rows"]]
            perm_rng = np.random.default_rng(cfg.seed + 7)
            for pol in cfg.policies:
                lp = PM[pol]
                idx = [i for i, r in enumerate(crow) if r[1] != "rejected" and r[0] in lp]
                variants = [(pol, [lp[crow[i][0]] for i in idx])]
                if pol == cfg.policies[0]:
                    probe_pos = [j for j, i in enumerate(idx) if crow[i][1] in ("adv", "contrast")]
                    shuffled = list(variants[0][1])
                    src = perm_rng.permutation(probe_pos)
                    for a, b in zip(probe_pos, src):
                        shuffled[a] = variants[0][1][b]
                    variants.append((pol + PERM, shuffled))
                for name, vals in variants:
                    for ref, sc in c_scores.items():
                        for j, i in enumerate(idx):
                            row = crow[i]
                            cols["run_id"].append(run_id)
                            cols["item_id"].append(item_of[row[0]])
                            cols["probe_id"].append(rid(row))
                            cols["variant"].append(row[1])
                            cols["policy"].append(name)
                            cols["reward"].append(ref)
                            cols["logprob_sum"].append(float(vals[j][0]))
                            cols["n_tokens"].append(int(vals[j][1]))
                            cols["score"].append(float(sc[i]))
            return cols

        cols = runner.stage("probe_scores", probe_table)

        def seam_from_sql(cols):
            con = duckdb.connect()
            try:
                store.init_schema(con)
                con.register("_p", pa.table(cols))
                con.execute("INSERT INTO study_probe_scores SELECT * FROM _p")
                # the PM term alone (a reference of the controls): a pseudo-RM under which every probe wins
                con.execute("INSERT INTO study_probe_scores SELECT * REPLACE (? AS reward, CASE WHEN variant = "
                            "'gold' THEN 0.0 ELSE 1.0 END AS score) FROM _p WHERE reward = ?",
                            [controls.PM_ONLY, cols["reward"][0]])
                got = con.execute("SELECT * FROM seam_variants(?, alpha := ?, beta := ?) WHERE variant = 'all'",
                                  [run_id, cfg.alpha, cfg.beta]).fetchall()
                names = [d[0] for d in con.description]
            finally:
                con.close()
            seam = {}
            for r in got:
                d = dict(zip(names, r))
                for v in SEAM_VARIANTS:
                    val = d[VARIANT_COL[v]]
                    seam.setdefault((d["policy"], d["reward"], v), {})[d["item_id"]] = (
                        float(val) if val is not None else math.nan)
            return seam

        seam = runner.stage("seam_sql", lambda: seam_from_sql(cols))
        margin, gold_score = {}, {}
        gi, ri = pair_rows(F["C_rows"])
        for ref, s in c_scores.items():
            margin[ref] = {it.item_id: float(s[gi[it.item_id]] - s[ri[it.item_id]]) for it in C}
            gold_score[ref] = {it.item_id: float(s[gi[it.item_id]]) for it in C}

        retrain_rows = runner.stage("acquisition_selection", lambda: acquisition_selection(
            cfg, heads, F, A, B, C, PM[cfg.study_policies[0]], run_id, log))
        bon = runner.stage("bon_samples", lambda: best_of_n_samples(cfg, heads, F, C, rms, heads_by, log))
        for t, rows in runner.stage("bon_eval", lambda: bon_eval.compute(bon, cfg)).items():
            results[t].extend(dict(run_id=run_id, **r) for r in rows)
        data = EvidenceData(mode=cfg.mode, items=[it.item_id for it in C], policies=cfg.policies,
                            rms=rms, margin=margin, seam=seam, cluster=cluster, planted_cluster=planted,
                            retrain=retrain_rows, gold_score=gold_score)
        for name, fn in (("endpoint", endpoint.compute), ("controls", controls.compute),
                         ("retrain_eval", retrain_eval.compute)):
            tables = runner.stage(name, lambda fn=fn: fn(data, cfg))
            for t, rows in tables.items():
                results[t].extend(dict(run_id=run_id, **r) for r in rows)
        verdict = (retrain_eval.verdict(data, cfg, results["study_endpoint"], results["study_controls"],
                                        results["study_retrain"])
                   + " " + bon_eval.verdict(results["study_saturation_test"]))
        results["study_verdict"].append(dict(run_id=run_id, mode=cfg.mode, headline=not cfg.proxy, verdict=verdict))
        results["study_design"].append(dict(run_id=run_id, mode=cfg.mode, design=des, written_at=written))
        results["study_power"] = [dict(run_id=run_id, **p) for p in des["power"]]
        results["study_items"] = [dict(run_id=run_id, item_id=it.item_id, split=k, cluster=cluster.get(it.item_id),
                                       label_source=it.label_source) for k, part in splits.items() for it in part]
        acc = {ref: float(np.mean([m > 0 for m in margin[ref].values()])) for ref in margin}
        results["study_models"] = [dict(run_id=run_id, model=r.ref, role="reward", size=r.size, seed=r.seed, arm=r.arm,
                                        accuracy_c=acc[r.ref], info={}) for r in rms]
        results["study_probe_scores"] = [dict(zip(cols, v)) for v in zip(*cols.values())]
        counts = runner.stage("write", lambda: experiment_store.write_evidence(cfg.db, results))
        log(f"verdict ({cfg.mode}): {verdict}")
        prim = [r for r in results["study_endpoint"] if r["stat"] == "auroc" and r["seam_variant"] == cfg.primary_variant]
        summary = {"run_id": run_id, "mode": cfg.mode, "timings_s": runner.timings, "splits": des["splits"]["sizes"],
                   "power": des["power"],
                   "primary_endpoint": {f"{r['policy']} x rm-{r['rm_size']} ({r['arm']})":
                                        f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']} pos~{r['positives']}"
                                        for r in prim},
                   "controls": [{k: c[k] for k in ("control", "seam_variant", "value", "lo", "hi", "passed")}
                                for c in results["study_controls"]],
                   "retrain": [{k: r[k] for k in ("analysis", "arm", "q", "accuracy", "lo", "hi", "delta_vs_random",
                                                  "delta_lo", "delta_hi")} for r in results["study_retrain"]],
                   "saturation": [{k: t[k] for k in ("policy", "comparison", "delta", "lo", "hi", "lo90", "hi90",
                                                     "margin", "n", "conclusion")}
                                  for t in results["study_saturation_test"]],
                   "verdict": verdict, "table_rows": counts}
        return runner.finish(summary)


def pair_rows(rows) -> tuple[dict[str, int], dict[str, int]]:
    """Item id -> row of its human-chosen ('gold') and of its human-rejected answer in a feature block."""
    return ({r[0]: i for i, r in enumerate(rows) if r[1] == "gold"},
            {r[0]: i for i, r in enumerate(rows) if r[1] == "rejected"})


def policy_model(cfg: HumanStudyConfig, ref: str):
    """The study's PM. `shared_context`: SEAM compares an item's responses with each other (the candidate-
    normalised variant takes a softmax over them), so they must be conditioned on the same prompt tokens; it also
    keeps one prompt pass per item (with per-response cuts ~40% of HH prompts split into ~17 contexts)."""
    from analysis.models.policy import PolicyConfig, PolicyModel

    return PolicyModel(ref, models_dir=cfg.models_dir,
                       config=PolicyConfig(device=cfg.device, dtype=cfg.dtype, max_length=cfg.pm_max_length,
                                           shared_context=True))


def acquisition_selection(cfg, heads, F, A, B, C, pm_lp, run_id, log) -> list[dict]:
    """Retrain RMs per arm and seed; record per C item whether the RM ranks chosen above rejected.
    B items are ranked with the seed's start RM: SEAM (primary variant, SQL macro), hack rate, |delta r|."""
    brow = F["B_rows"]
    b_items = [it.item_id for it in B]
    bg, br = pair_rows(brow)
    cgi, cri = pair_rows(F["C_rows"])
    c_ids = [i for i in cgi if i in cri]
    cg, cr = [cgi[i] for i in c_ids], [cri[i] for i in c_ids]
    Bc = F["B"][[bg[i] for i in b_items]]
    Br = F["B"][[br[i] for i in b_items]]
    out = []

    def record(analysis, arm, q, seed, head):
        s = heads.score(head, F["C"])
        for item, g, r in zip(c_ids, cg, cr):
            out.append(dict(analysis=analysis, arm=arm, q=q, seed=seed, item=item, correct=float(s[g] > s[r])
                            if s[g] != s[r] else 0.5))

    for seed in range(cfg.acq_seeds):
        sel = np.random.default_rng(5000 + seed).permutation(len(A))[:cfg.acq_start]
        base = heads.fit(F["A_c"][sel], F["A_r"][sel], seed)
        sb = heads.score(base, F["B"])
        cols = {k: [] for k in ("run_id", "item_id", "probe_id", "variant", "policy", "reward", "logprob_sum",
                                "n_tokens", "score")}
        for i, row in enumerate(brow):
            if row[1] == "rejected":
                continue
            lp, n = pm_lp[row[0]]
            for k, v in zip(cols, (run_id, row[0] if row[1] == "gold" else row[0].rsplit(":", 1)[0],
                                   row[0] + ":gold" if row[1] == "gold" else row[0], row[1], "pm", "base",
                                   float(lp), int(n), float(sb[i]))):
                cols[k].append(v)
        con = duckdb.connect()
        try:
            store.init_schema(con)
            con.register("_p", pa.table(cols))
            con.execute("INSERT INTO study_probe_scores SELECT * FROM _p")
            got = {r[0]: r[1:] for r in con.execute(
                f"SELECT item_id, {VARIANT_COL[cfg.primary_variant]}, hack_rate FROM "
                "seam_variants(?, alpha := ?, beta := ?) WHERE variant = 'all'", [run_id, cfg.alpha, cfg.beta]).fetchall()}
        finally:
            con.close()
        seam_b = endpoint._finite(np.array([got[i][0] if i in got and got[i][0] is not None else -math.inf
                                            for i in b_items], float))
        hack_b = np.array([(got.get(i, (0, 0))[1] or 0.0) for i in b_items])
        marg_b = np.abs(sb[[bg[i] for i in b_items]] - sb[[br[i] for i in b_items]])
        rng = np.random.default_rng(9000 + seed)
        tie = rng.random(len(b_items)) * 1e-9
        arms = {"top_seam": np.argsort(-(np.nan_to_num(seam_b, nan=-1e300) + tie))[:cfg.acq_add],
                "top_hack_rate": np.argsort(-(hack_b + tie))[:cfg.acq_add],
                "smallest_margin": np.argsort(marg_b + tie)[:cfg.acq_add],
                "random": rng.permutation(len(b_items))[:cfg.acq_add]}
        record("acquisition", "start", None, seed, base)
        for arm, add in arms.items():
            h = heads.fit(np.concatenate([F["A_c"][sel], Bc[add]]), np.concatenate([F["A_r"][sel], Br[add]]), seed)
            record("acquisition", arm, None, seed, h)
        for q in cfg.select_q:
            n_drop = int(round(q * len(b_items)))
            drop = {"top_seam": np.argsort(-(np.nan_to_num(seam_b, nan=-1e300) + tie))[:n_drop],
                    "random": rng.permutation(len(b_items))[:n_drop], "none": np.array([], int)}
            for arm, d in drop.items():
                keep = np.setdiff1d(np.arange(len(b_items)), d)
                record("selection", arm, q, seed, heads.fit(Bc[keep], Br[keep], seed))
    log(f"acquisition / selection: {len(out)} item outcomes over {cfg.acq_seeds} seeds")
    return out


def train_sft_pm(cfg: HumanStudyConfig, A: list[Item], log: Callable[[str], None]):
    """The SFT'd secondary PM: the primary fine-tuned on A's human-chosen answers (A trains models; B and C
    stay unseen). Reused when a checkpoint with the same card config exists (a resumed or repeated run)."""
    from analysis.models.configs import PMTrainConfig
    from analysis.models.train_pm import read_card, train_policy_model

    want = PMTrainConfig(base=cfg.study_policies[0], steps=cfg.sft_steps, seed=cfg.seed, device=cfg.device,
                         models_dir=str(cfg.models_path))
    examples = [(it.prompt, it.chosen) for it in A]
    key = hashlib.sha1(json.dumps([examples, dataclasses.asdict(want)]).encode()).hexdigest()[:12]
    out = Path(cfg.models_path) / f"study-sft-{cfg.sft_steps}-{key}"
    if read_card(out) is not None:
        log(f"SFT'd PM: reusing {out}")
        return out
    log(f"SFT of {cfg.study_policies[0]}: {cfg.sft_steps} steps on {len(A)} A chosen answers -> {out}")
    train_policy_model(examples, out, want, progress=cfg.progress)
    gc.collect()
    return out


def best_of_n_samples(cfg, heads, F, C, rms, heads_by, log) -> bon_eval.BoNData:
    """Saturation data: each study PM samples `bon_n` answers to the first `bon_prompts` C prompts; every
    human-arm grid RM (picker) and the judge score them. The judge is the mean score of `grid_seeds` heads
    trained on B's human chosen/rejected pairs: B is disjoint from A, so it is never one of the pickers.
    Human labels do not exist for generated answers; the judge is the only reference (said in every table)."""
    prompts = C[:cfg.bon_prompts]
    bg, br = pair_rows(F["B_rows"])
    ids = [i for i in bg if i in br]
    judges = [heads.fit(F["B"][[bg[i] for i in ids]], F["B"][[br[i] for i in ids]], 20000 + s)
              for s in range(cfg.grid_seeds)]
    pickers = [r for r in rms if r.arm == "human"]
    picker, judge = {}, {}
    for ref in cfg.study_policies:
        pm = policy_model(cfg, ref)
        texts = pm.generate([it.prompt for it in prompts], n=cfg.bon_n, max_new_tokens=cfg.bon_new_tokens,
                            seed=cfg.seed, batch_size=max(1, 128 // cfg.bon_n), progress=cfg.progress)
        del pm
        gc.collect()
        feats = heads.features([it.prompt for it, row in zip(prompts, texts) for _ in row],
                               [t for row in texts for t in row], progress=cfg.progress)
        shape = (len(prompts), cfg.bon_n)
        picker[ref] = {r.ref: heads.score(heads_by[r.ref], feats).reshape(shape) for r in pickers}
        judge[ref] = np.mean([heads.score(h, feats) for h in judges], axis=0).reshape(shape)
    log(f"best-of-{cfg.bon_n}: {len(prompts)} C prompts x {len(cfg.study_policies)} PMs; {len(pickers)} pickers, "
        f"judge = {len(judges)} heads on {len(ids)} B pairs")
    return bon_eval.BoNData(mode=cfg.mode, policies=list(cfg.study_policies), prompts=[it.item_id for it in prompts],
                            rms=pickers, picker=picker, judge=judge)
