"""Builds notebooks/paper_miniature.ipynb (kept as code so diffs stay readable).

Run: python notebooks/make_paper_miniature.py            (writes the notebook without outputs)
     SEAM_DB=cache/seam.duckdb python notebooks/make_paper_miniature.py --execute   (also runs it)
The notebook reads the relations written by `seam experiment` with plain SQL (read-only connection).
"""

import os
import sys
from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    md("# *It Takes Two* in miniature\n\n"
       "Lu et al. (2024, arXiv 2406.07971) report three things about RLHF with a policy model (PM) and a reward "
       "model (RM): **saturation** (past a point, a better PM or RM alone stops helping), **mismatch** (on the "
       "PM's own responses the RM disagrees with humans ~35% of the time) and **SEAM** (a per-sample PM–RM "
       "discrepancy score that helps choose RL and augmentation data). This notebook reproduces each analysis "
       "at toy scale, offline, from the results that `seam experiment` writes into the DuckDB file.\n\n"
       "**Scale and caveats.** PMs are 135M–270M models (SmolLM2-135M-Instruct, Gemma-3-270M base, SmolLM2 after a "
       "few SFT steps); RMs are Bradley–Terry heads on a frozen MiniLM trained on 0…all chatterbot pairs; prompts "
       "are chatterbot-corpus questions. The **gold judge is a proxy**: by default the strongest RM built here "
       "(trained on more pairs, including the analysed prompts' gold answers), not a human. Best-of-N stands in "
       "for PPO, as in reward-overoptimisation studies. Hand labels from the Spot-check page take precedence over "
       "the judge in the mismatch numbers where they exist. Every number carries a 95% interval and its n.\n\n"
       "Set `SEAM_DB` to the DB to read (default `cache/seam.duckdb`); produce it with "
       "`seam experiment --db cache/seam.duckdb` (about an hour on 2 CPU cores) or `--quick` (minutes)."),
    code("import json, os, time\nfrom pathlib import Path\n\nimport duckdb\nimport pandas as pd\n"
         "import plotly.express as px\nimport plotly.graph_objects as go\nimport plotly.io as pio\n\n"
         "pio.renderers.default = 'plotly_mimetype+notebook_connected'  # figures as JSON; plotly.js from its CDN when viewed\n"
         "default = Path('..') / 'cache' / 'seam.duckdb' if Path.cwd().name == 'notebooks' else Path('cache/seam.duckdb')\n"
         "DB = Path(os.environ.get('SEAM_DB', default))\n"
         "for attempt in range(50):  # a running job holds the file only for short moments\n"
         "    try:\n        con = duckdb.connect(str(DB), read_only=True); break\n"
         "    except duckdb.IOException:\n        time.sleep(0.2)\n"
         "q = lambda sql, *p: con.execute(sql, list(p)).df()\n"
         "run = q(\"SELECT run_id, name, status, started_at, finished_at, config, summary FROM experiment_runs\"\n"
         "        \" WHERE run_id = (SELECT any_value(run_id) FROM saturation_grid)\")\n"
         "cfg = json.loads(run.config[0]); summary = json.loads(run.summary[0])\n"
         "print(f\"run {run.run_id[0]} ({run.name[0]}, {run.status[0]}), {run.started_at[0]} -> {run.finished_at[0]}\")\n"
         "print({k: cfg[k] for k in ('policies', 'rm_sizes', 'gold_judge', 'bon_prompts', 'pool_prompts', 'policy_samples',\n"
         "                           'gen_max_new_tokens', 'gen_temperature', 'k', 'variants', 'seeds')})\n"
         "print('notes:', summary.get('notes'))\n"
         "# every run into this DB (a rerun reuses trained models and stored scores, so its timings are short)\n"
         "q(\"SELECT run_id, name, status, started_at, finished_at, json_extract(summary, '$.timings_s') AS timings_s\"\n"
         "  \" FROM experiment_runs ORDER BY started_at\")"),
    md("## 1. The two axes\n\nEach RM alone: accuracy on **held-out** pairs (chatterbot prompts never trained on: gold "
       "vs the gold answer of the most similar other question — both human-written — and vs a perturbed copy; plus "
       "real human HH-RLHF preference pairs where the shared data file exists). Each PM alone: the judge's mean score "
       "of its samples (N = 1) and how often the judge prefers a sample to the human gold answer."),
    code("models = q('SELECT model, role, label, axis_rank, train_pairs FROM experiment_models ORDER BY role, axis_rank')\n"
         "mq = q('SELECT label, role, metric, value, lo, hi, n FROM model_quality ORDER BY role, metric, label')\n"
         "acc = mq[mq.metric.str.startswith('acc:')].merge(models[['label', 'train_pairs', 'axis_rank']], on='label')\n"
         "fig = px.scatter(acc.sort_values('axis_rank'), x='label', y='value', color='metric', error_y=acc.hi - acc.value,\n"
         "                 error_y_minus=acc.value - acc.lo, hover_data=['n', 'train_pairs'],\n"
         "                 title='RM accuracy on held-out pairs (Wilson 95%); judge last')\n"
         "fig.update_layout(yaxis_title='accuracy', xaxis_title='RM (training pairs ->)'); fig.show()\n"
         "mq.pivot_table(index=['role', 'label'], columns='metric', values='value').round(3)"),
    md("## 2. Saturation\n\nPer (PM, RM) cell: N samples per prompt, the RM picks one, the judge scores the pick "
       "(`quality`); `gain` = quality − mean quality of one random sample (N = 1), `win_rate` = P(pick beats another "
       "sample). Bootstrap 95% intervals over prompts. The paper's grid is 10 SFT checkpoints × 10 RMs with one PPO "
       "run per cell; ours is the same picture with best-of-N in place of PPO."),
    code("grid = q('''SELECT policy_label, reward_label, policy_rank, reward_rank, n, bon_n, quality, quality_lo, quality_hi,\n"
         "                    random_quality, oracle_quality, gain, gain_lo, gain_hi, win_rate, win_lo, win_hi\n"
         "             FROM saturation_grid WHERE metric = 'bon_gold' ORDER BY policy_rank, reward_rank''')\n"
         "z = grid.pivot_table(index='policy_label', columns='reward_label', values='quality')\n"
         "z = z.loc[grid.drop_duplicates('policy_label').policy_label, grid.sort_values('reward_rank').drop_duplicates('reward_label').reward_label]\n"
         "px.imshow(z, text_auto='.3f', color_continuous_scale='Viridis', aspect='auto',\n"
         "          title=f'Best-of-{grid.bon_n.max()} gold-judge quality (rows: PMs weak→strong, columns: RMs weak→strong)').show()\n"
         "fig = go.Figure()\n"
         "for pm, g in grid.groupby('policy_label', sort=False):\n"
         "    g = g.sort_values('reward_rank')\n"
         "    fig.add_scatter(x=g.reward_label, y=g.quality, name=pm, mode='lines+markers',\n"
         "                    error_y=dict(type='data', array=g.quality_hi - g.quality, arrayminus=g.quality - g.quality_lo))\n"
         "fig.update_layout(title='Quality along the RM axis, one line per PM', yaxis_title='judge score of the BoN pick'); fig.show()\n"
         "grid[['policy_label', 'reward_label', 'n', 'quality', 'gain', 'gain_lo', 'gain_hi', 'win_rate', 'win_lo', 'win_hi']].round(3)"),
    md("Best-of-n for every n ≤ N (exact average over all n-subsets of the samples): does more selection pressure "
       "keep paying off with each RM?"),
    code("curve = q('''SELECT g.policy_label, g.reward_label, c.bon_n, c.quality, c.quality_lo, c.quality_hi\n"
         "              FROM saturation_curve c JOIN saturation_grid g USING (policy, reward) ORDER BY g.reward_rank, c.bon_n''')\n"
         "px.line(curve, x='bon_n', y='quality', color='reward_label', facet_col='policy_label', markers=True,\n"
         "        title='Best-of-n quality vs n').show()"),
    md("**Does the grid saturate?** Along each axis with the other model fixed: the first level that no stronger "
       "level beats significantly (paired bootstrap over prompts)."),
    code("sat = q('SELECT axis, fixed_label, levels, saturates_at, saturated, last_step, last_step_lo, last_step_hi, description'\n"
         "        ' FROM saturation_summary ORDER BY axis, fixed_label')\n"
         "for d in sat.description: print('-', d)\nsat.drop(columns='description').round(3)"),
    md("## 3. Mismatch on the PM's own samples\n\nFor every pair of one prompt's samples, does the RM prefer the "
       "sample the reference (judge, or a human label where one exists) prefers? RM ties are reported apart, judge "
       "ties have no reference. Next to it, the same RM's mismatch on held-out dataset pairs (= 1 − accuracy). "
       "The paper measured ~35% on PM pairs with human labels."),
    code("mm = q('''SELECT coalesce(gp.label, 'dataset') AS pm, gr.label AS rm, m.pair_kind, m.reference, m.k, m.n, m.rate, m.lo, m.hi, m.ties\n"
         "           FROM mismatch_rates m LEFT JOIN experiment_models gp ON gp.model = m.policy AND gp.role = 'policy'\n"
         "           JOIN experiment_models gr ON gr.model = m.reward AND gr.role IN ('reward', 'judge')\n"
         "           WHERE m.pair_kind IN ('pm_samples', 'dataset:chatterbot_heldout', 'dataset:hh_harmless')\n"
         "             AND m.reference NOT IN ('human')\n"
         "           ORDER BY gr.label, m.pair_kind, pm''')\n"
         "mm['series'] = mm.pair_kind.where(mm.pair_kind != 'pm_samples', 'PM samples: ' + mm.pm)\n"
         "fig = px.bar(mm, x='rm', y='rate', color='series', barmode='group', error_y=mm.hi - mm.rate,\n"
         "             error_y_minus=mm.rate - mm.lo, hover_data=['k', 'n', 'ties', 'reference'],\n"
         "             title='Mismatch rate with Wilson 95% intervals: PM-sample pairs vs held-out dataset pairs')\n"
         "fig.add_hline(y=0.35, line_dash='dot', annotation_text='paper: 35%'); fig.show()\n"
         "mm[['pm', 'rm', 'pair_kind', 'k', 'n', 'rate', 'lo', 'hi', 'ties']].round(3)"),
    md("## 4. Does SEAM find the prompts where the RM fails?\n\nPrompt level, per (PM, RM) cell pooled over cells: "
       "AUROC of each predictor for *the RM's best-of-N pick is not the judge's favourite*, and Spearman ρ with the "
       "prompt's pairwise mismatch rate. Baselines: the PM samples' length, the RM margin alone "
       "(−mean(r(y*) − r(y_j))), the RM's margin between its top two samples, the PM's likelihood of the worse "
       "answers alone (mean w(y_j)) and of its own samples. All are oriented so that higher = predicted failure."),
    code("val = q('''SELECT predictor, kind, target, stat, value, lo, hi, n, positives FROM seam_validation\n"
         "            WHERE policy = 'all' ORDER BY stat, target, value DESC''')\n"
         "auc = val[val.stat == 'auroc']\n"
         "fig = px.bar(auc, x='value', y='predictor', color='kind', orientation='h', error_x=auc.hi - auc.value,\n"
         "             error_x_minus=auc.value - auc.lo, title='AUROC for \"RM pick is not the judge\\'s best\" (pooled over cells)')\n"
         "fig.add_vline(x=0.5, line_dash='dot'); fig.update_layout(yaxis={'categoryorder': 'total ascending'}); fig.show()\n"
         "val.pivot_table(index=['kind', 'predictor'], columns='target', values='value').round(3)"),
    code("items = q('''SELECT i.policy, gr.label AS rm, i.score AS seam_mean, i.regret, i.pair_mismatch_rate\n"
         "              FROM seam_validation_items i JOIN experiment_models gr ON gr.model = i.reward AND gr.role = 'reward'\n"
         "              WHERE i.predictor = 'seam:mean' ''')\n"
         "px.scatter(items, x='seam_mean', y='pair_mismatch_rate', color='rm', opacity=0.6,\n"
         "           title='Per prompt: mean SEAM vs the share of PM-sample pairs the RM gets wrong').show()"),
    md("## 5. Selection: drop the top-q% SEAM samples\n\nThe pool's samples (prompt, gold, worse answers) are ranked "
       "by SEAM (first PM, middle RM of the axis). We drop the top q%, the bottom q%, or a random q% (the control, "
       "several seeds), retrain the RM on the kept (gold ≻ worse) pairs and measure on held-out data: accuracy on "
       "held-out pairs, best-of-N gold quality on the `bon` prompts with the retrained RM, and SEAM on those prompts. "
       "Rows with `seed` NULL average over seeds; `delta` is the paired difference to keeping everything, `vs_random` "
       "the paired difference to dropping a random q% (the control)."),
    code("sel = q('''SELECT condition, q, metric, value, lo, hi, n, delta, delta_lo, delta_hi, vs_random, vs_random_lo, vs_random_hi,\n"
         "                   kept_samples, train_pairs, mean_seam_kept\n"
         "            FROM selection_results WHERE seed IS NULL ORDER BY metric, q, condition''')\n"
         "key = sel[sel.metric.isin(['acc:chatterbot_heldout', 'acc:hh_harmless', 'bon_gold:all', 'seam_heldout'])].copy()\n"
         "key['cond'] = key.condition + key.q.map(lambda v: '' if pd.isna(v) else f' {v:.0%}')\n"
         "fig = px.scatter(key, x='cond', y='value', facet_col='metric', error_y=key.hi - key.value, error_y_minus=key.value - key.lo,\n"
         "                 title='Selection by SEAM: retrained-RM downstream metrics (95% bootstrap over items)')\n"
         "fig.update_yaxes(matches=None, showticklabels=True); fig.show()\n"
         "key[['metric', 'cond', 'value', 'lo', 'hi', 'delta', 'delta_lo', 'delta_hi', 'vs_random', 'vs_random_lo', 'vs_random_hi',\n"
         "     'mean_seam_kept']].round(4)"),
    md("## 6. Augmentation: SEAM-chosen pairs vs random pairs\n\nStarting from a base RM training set, add M (gold ≻ "
       "worse) pairs taken from the highest-SEAM pool samples, or M random pool pairs; several seeds. `delta` is "
       "against the base RM, `vs_random` is SEAM-chosen minus random (paired over items)."),
    code("aug = q('''SELECT condition, added_pairs, metric, value, lo, hi, delta, delta_lo, delta_hi, vs_random, vs_random_lo, vs_random_hi\n"
         "            FROM augmentation_results WHERE seed IS NULL ORDER BY metric, condition''')\n"
         "key = aug[aug.metric.isin(['acc:chatterbot_heldout', 'acc:hh_harmless', 'bon_gold:all', 'seam_heldout'])]\n"
         "fig = px.scatter(key, x='condition', y='value', facet_col='metric', error_y=key.hi - key.value,\n"
         "                 error_y_minus=key.value - key.lo, title='Augmentation: retrained RM on held-out data')\n"
         "fig.update_yaxes(matches=None, showticklabels=True); fig.show()\nkey.round(4)"),
    md("## 7. What this run says\n\nThe headline lines below are computed from the tables above, so they always "
       "describe the DB the notebook was run on. Read them with the intervals: at this scale many effects are "
       "within noise, which is itself the honest answer for a 135M PM and a MiniLM RM."),
    code("def fmt(v, lo, hi): return f'{v:+.3f} [{lo:+.3f}, {hi:+.3f}]'\n"
         "print('Saturation:'); [print('  -', d) for d in sat.description]\n"
         "pm_mm = mm[mm.pair_kind == 'pm_samples']\n"
         "if len(pm_mm):\n"
         "    tot_k, tot_n = pm_mm.k.sum(), pm_mm.n.sum()\n"
         "    print(f'Mismatch on PM-sample pairs, all cells pooled: {tot_k / tot_n:.1%} of {tot_n} pairs '\n"
         "          f'(per cell {pm_mm.rate.min():.1%}-{pm_mm.rate.max():.1%}); paper: ~35%')\n"
         "best = auc.sort_values('value', ascending=False).iloc[0] if len(auc) else None\n"
         "if best is not None:\n"
         "    s = auc[auc.predictor == 'seam:mean']\n"
         "    print(f'Best predictor of a bad BoN pick: {best.predictor} AUROC {best.value:.3f} [{best.lo:.3f}, {best.hi:.3f}]'\n"
         "          + (f'; SEAM (mean over variants) {s.value.iloc[0]:.3f} [{s.lo.iloc[0]:.3f}, {s.hi.iloc[0]:.3f}]' if len(s) else ''))\n"
         "for m in ('acc:chatterbot_heldout', 'bon_gold:all'):\n"
         "    top = sel[(sel.metric == m) & (sel.condition == 'drop_top')]\n"
         "    rnd = sel[(sel.metric == m) & (sel.condition == 'drop_random')]\n"
         "    for (_, t), (_, r) in zip(top.iterrows(), rnd.iterrows()):\n"
         "        print(f'Selection q={t.q:.0%} {m}: drop top-SEAM {fmt(t.delta, t.delta_lo, t.delta_hi)}, drop random '\n"
         "              f'{fmt(r.delta, r.delta_lo, r.delta_hi)} (change vs keeping all); top minus random '\n"
         "              f'{fmt(t.vs_random, t.vs_random_lo, t.vs_random_hi)}')\n"
         "for m in ('acc:chatterbot_heldout', 'seam_heldout'):\n"
         "    s = aug[(aug.metric == m) & (aug.condition == 'seam')]\n"
         "    if len(s):\n"
         "        s = s.iloc[0]\n"
         "        print(f'Augmentation {m}: SEAM-chosen vs base {fmt(s.delta, s.delta_lo, s.delta_hi)}, '\n"
         "              f'vs random {fmt(s.vs_random, s.vs_random_lo, s.vs_random_hi)}')"),
]

# The pre-registered study (`seam experiment --human`) comes first: it is what a reviewer should read.
EVIDENCE = [
    md("## 0. Evidence first: the pre-registered study against human labels\n\n"
       "`seam experiment --human DATASET` writes its design (splits by prompt hash, RM grid, SEAM variants, "
       "endpoints, controls and the **power of each comparison**) before it trains or scores anything, then the "
       "primary endpoint — AUROC of SEAM for *the RM prefers the human-rejected answer* on held-out prompts, per "
       "(PM, RM size) cell with a bootstrap interval — the controls, acquisition and selection, and a verdict generated "
       "from the numbers. The positive control gates everything: an RM broken on purpose on one topic cluster (its "
       "unplanted twin elsewhere, an expert trained there to prefer the worse answers its PM would give) must make SEAM flag that cluster "
       "more than the twin does (AUROC difference, paired by seed, lower 95% end > 0); if it does not, the verdict "
       "claims nothing. A run without human labels is marked **proxy judge** and is not evidence about humans. "
       "The legacy sections below use a proxy gold judge throughout."),
    code("has_study = bool(q(\"SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'study_verdict'\").n[0])\n"
         "if has_study and len(q('SELECT * FROM study_verdict')):\n"
         "    v = q('SELECT v.mode, v.verdict, d.written_at, d.design FROM study_verdict v JOIN study_design d USING (run_id)')\n"
         "    tag = '' if v['mode'][0] == 'human' else '  [PROXY JUDGE: not evidence about humans]'\n"
         "    print('VERDICT' + tag + ':', v.verdict[0])\n"
         "    print('pre-registered at', v.written_at[0])\n"
         "    display(q('SELECT comparison, n, positives, round(mde, 3) AS mde, note FROM study_power'))\n"
         "    display(q(\"SELECT policy, arm, rm_size, seam_variant, round(value, 3) AS auroc, round(lo, 3) AS lo, \"\n"
         "              \"round(hi, 3) AS hi, n, positives, round(p_holm, 4) AS p_holm, equivalent \"\n"
         "              \"FROM study_endpoint WHERE stat = 'auroc' ORDER BY NOT primary_endpoint, arm, rm_size, seam_variant\"))\n"
         "    display(q('SELECT control, rm_size, seam_variant, round(value, 3) AS value, round(lo, 3) AS lo, '\n"
         "              'round(hi, 3) AS hi, passed FROM study_controls'))\n"
         "    display(q('SELECT analysis, q, arm, round(accuracy, 3) AS acc, round(delta_vs_random, 3) AS delta, '\n"
         "              'round(delta_lo, 3) AS d_lo, round(delta_hi, 3) AS d_hi, n_seeds, n_items FROM study_retrain'))\n"
         "else:\n"
         "    print('no pre-registered study in this DB: run `seam experiment --human DATASET --db ...`')"),
    md("### Saturation in the study: best-of-N up to N = 16\n\n"
       "Each PM samples N answers per C prompt; every RM of the grid picks its best of n (n = 1, 2, 4, ... N); the "
       "y axis is the judge's score of the pick (expected over all n-subsets, mean over the size's seeds, 95% "
       "bootstrap over prompts). **Judge: RMs trained on B (held out from the grid); no human labels exist for "
       "generated answers.** More N or a larger RM is called *saturated* only by equivalence (TOST: the 90% "
       "interval inside ± the pre-registered margin, in judge-score SD units), never by a wide interval."),
    code("if has_study and bool(q(\"SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'study_saturation'\").n[0]):\n"
         "    s0 = q('SELECT mode, policy, rm_size, bon_n, quality, lo, hi, n, n_seeds FROM study_saturation '\n"
         "           'ORDER BY policy, rm_size, bon_n')\n"
         "    s0['rm'] = 'rm-' + s0.rm_size.astype(str); s0['policy'] = s0.policy.str.rsplit('/', n=1).str[-1]\n"
         "    tag = '' if s0['mode'][0] == 'human' else ' [PROXY JUDGE]'\n"
         "    fig = px.line(s0, x='bon_n', y='quality', color='rm', facet_col='policy', markers=True, log_x=True,\n"
         "                  error_y=s0.hi - s0.quality, error_y_minus=s0.quality - s0.lo, hover_data=['n', 'n_seeds'],\n"
         "                  title='Best-of-N: judge score of the RM pick' + tag + ' (judge: RMs trained on B, held out '\n"
         "                        'from the grid; no human labels exist for generated answers)')\n"
         "    fig.update_xaxes(tickvals=sorted(s0.bon_n.unique()), title='N (log2 axis)')\n"
         "    fig.update_yaxes(title='judge score of the pick'); fig.show()\n"
         "    display(q('SELECT policy, comparison, rm_size, round(delta, 4) AS delta, round(lo, 4) AS lo, round(hi, 4) AS hi, '\n"
         "              'round(lo90, 4) AS lo90, round(hi90, 4) AS hi90, round(margin, 4) AS margin, margin_sd, n, '\n"
         "              \"conclusion FROM study_saturation_test ORDER BY policy, comparison LIKE 'RM%', rm_size\"))\n"
         "else:\n"
         "    print('no best-of-N saturation in this DB (a study written before it existed, or none)')"),
]
cells[2:2] = EVIDENCE

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
out = Path(__file__).with_name("paper_miniature.ipynb")
if "--execute" in sys.argv:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(__file__).parent)}}).execute()
nbf.write(nb, out)
print(f"wrote {out}" + (f" (executed on {os.environ.get('SEAM_DB', 'cache/seam.duckdb')})" if "--execute" in sys.argv else ""))
