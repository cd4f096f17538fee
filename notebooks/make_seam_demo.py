"""Builds notebooks/seam_demo.ipynb (kept as code so diffs stay readable). Run: python notebooks/make_seam_demo.py"""

from pathlib import Path

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell(
        "# SEAM Lens: the demo DB with plain SQL\n\n"
        "Opens the results DB read-only (works while the app or a precompute runs) and reproduces the headline "
        "figures: mean SEAM per variant and model pair, and the RM's accuracy on (gold ≻ worse) pairs with "
        "Wilson 95% intervals. Set `SEAM_DB` to use another DB (default `cache/seam.duckdb`, from `bash scripts/demo.sh`)."),
    nbf.v4.new_code_cell(
        "import os, time\nfrom pathlib import Path\nimport duckdb\nimport plotly.express as px\n"
        "from scipy.stats import binomtest\n\n"
        "DB = Path(os.environ.get('SEAM_DB', Path.cwd().parent / 'cache' / 'seam.duckdb' if Path.cwd().name == 'notebooks' else 'cache/seam.duckdb'))\n"
        "for attempt in range(50):  # a running precompute holds the file for a moment at a time\n"
        "    try:\n        con = duckdb.connect(str(DB), read_only=True); break\n"
        "    except duckdb.IOException:\n        time.sleep(0.2)\n"
        "con.sql('SELECT variant, count(*) AS responses FROM responses GROUP BY ALL ORDER BY 1').df()"),
    nbf.v4.new_markdown_cell("## Mean SEAM per variant and model pair (α = 1, hard hacking)"),
    nbf.v4.new_code_cell(
        "seam = con.sql('''\n"
        "    SELECT variant, policy, reward, count(*) AS n, avg(seam) AS mean_seam,\n"
        "           stddev_samp(seam) / sqrt(count(*)) AS se, avg(hack_rate) AS hack_rate\n"
        "    FROM seam GROUP BY ALL ORDER BY reward, variant''').df()\n"
        "seam['reward_short'] = seam['reward'].str.split('/').str[-1]\n"
        "fig = px.bar(seam, x='variant', y='mean_seam', color='reward_short', barmode='group', error_y=1.96 * seam['se'],\n"
        "             title='Mean SEAM by variant and RM (error bars: 95% normal CI)', hover_data=['n', 'hack_rate'])\n"
        "fig.show()\nseam"),
    nbf.v4.new_markdown_cell("## RM accuracy on (gold ≻ worse) pairs, Wilson 95% intervals\n\n"
                             "The SEAM paper's point: an RM that looks accurate on one kind of pair can be badly wrong on another."),
    nbf.v4.new_code_cell(
        "acc = con.sql('SELECT reward, variant, n, correct, wrong, ties FROM rm_accuracy ORDER BY reward, variant').df()\n"
        "def wilson(row):\n"
        "    m = row.correct + row.wrong\n"
        "    ci = binomtest(int(row.correct), int(m)).proportion_ci(method='wilson') if m else None\n"
        "    return (row.correct / m if m else float('nan'), ci.low if ci else float('nan'), ci.high if ci else float('nan'))\n"
        "acc[['accuracy', 'lo', 'hi']] = acc.apply(wilson, axis=1, result_type='expand')\n"
        "acc"),
    nbf.v4.new_markdown_cell("## SEAM distribution of one model pair"),
    nbf.v4.new_code_cell(
        "pair = con.execute('SELECT policy, reward FROM seam GROUP BY ALL ORDER BY count(*) DESC LIMIT 1').fetchone()\n"
        "dist = con.execute('SELECT variant, seam FROM seam WHERE policy = ? AND reward = ?', list(pair)).df()\n"
        "px.histogram(dist, x='seam', color='variant', nbins=30, barmode='overlay',\n"
        "             title=f'SEAM per sample (n = {len(dist)})').show()"),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
out = Path(__file__).with_name("seam_demo.ipynb")
nbf.write(nb, out)
print(f"wrote {out}")
