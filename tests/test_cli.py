"""The `seam` command line as a user runs it (subprocess for the entry point, main() for the rest)."""

import json
import subprocess
import sys

import pytest

from analysis.storage import store
from analysis.cli import main


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "analysis.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for sub in ("precompute", "demo", "app", "info", "alias", "train-rm", "train-pm", "experiment", "import-rlhf"):
        assert sub in out


def test_bad_flags_give_clear_errors(tmp_path, capsys):
    assert main(["precompute", "x.jsonl", "--variants", "contrast,bogus", "--db", str(tmp_path / "a.duckdb")]) == 2
    assert "unknown variants ['bogus']" in capsys.readouterr().err
    assert main(["precompute", str(tmp_path / "missing.jsonl"), "--variants", "rejected",
                 "--db", str(tmp_path / "a.duckdb"), "--no-umap"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["info", "--db", str(tmp_path / "none.duckdb")]) == 2


def test_ingest_only_precompute_records_rejects_and_is_idempotent(tmp_path, capsys):
    """No models: the job still ingests, builds adv/rejected responses and records malformed rows."""
    data = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "What is 2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
        {"prompt": "Capital of France?", "chosen": "Paris is the capital of France.", "rejected": "Lyon."},
        {"prompt": "Empty chosen", "chosen": "", "rejected": "x"},
        {"prompt": "Same", "chosen": "same answer", "rejected": "same answer"},
        {"unrelated": 1},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    db = tmp_path / "seam.duckdb"
    args = ["precompute", str(data), "--variants", "adv,rejected", "--k", "2", "--no-umap", "--db", str(db),
            "--quiet"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert '"rejects": 3' in first
    con = store.connect(db)
    counts = dict(con.execute("SELECT variant, count(*) FROM responses GROUP BY 1").fetchall())
    assert counts == {"gold": 2, "rejected": 2, "adv": 4}
    assert con.execute("SELECT count(*) FROM rejects").fetchone()[0] == 3
    reasons = " ".join(r[0] for r in con.execute("SELECT reason FROM rejects").fetchall())
    assert "empty" in reasons and "identical" in reasons
    before = store.table_counts(con)
    con.close()
    assert main(args) == 0  # rerun: nothing new
    con = store.connect(db)
    after = store.table_counts(con)
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
    assert con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'done') FROM runs").fetchone() == (2, 2)
    con.close()
    assert main(["info", "--db", str(db)]) == 0
    assert "rejects" in capsys.readouterr().out


@pytest.mark.slow
def test_train_rm_then_score_with_it(tmp_path, capsys):
    """`seam train-rm` writes a checkpoint that `--reward DIR` loads like any hub RM."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.",
                                          "rejected": f"Bananas are yellow {i}."}) for i in range(30)) + "\n")
    rm = tmp_path / "rm"
    assert main(["train-rm", str(data), "--out", str(rm), "--max-pairs", "20"]) == 0
    assert (rm / "config.json").exists() and (rm / "seam_rm.json").exists()
    db = tmp_path / "seam.duckdb"
    assert main(["precompute", str(data), "--reward", str(rm), "--variants", "rejected", "--no-umap",
                 "--db", str(db), "--quiet"]) == 0
    con = store.connect(db)
    assert con.execute("SELECT count(*), count(DISTINCT reward) FROM rm_scores").fetchone() == (60, 1)
    assert con.execute("SELECT reward FROM rm_accuracy").fetchone()[0] == str(rm)
    assert con.execute("SELECT role, sha256 IS NOT NULL FROM models").fetchone() == ("reward", True)
    con.close()


def test_info_prints_names_that_look_like_rich_markup(tmp_path, capsys):
    """Names are data: `seam info` prints `evil[/b]` and `[red]x[/red]` literally (rich markup used to crash it)."""
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "[bold]p[/bold]", "chosen": "It is 4.", "rejected": "It is 5."}) + "\n"
                    + json.dumps({"bad": "[/]"}) + "\n")
    db = tmp_path / "[b]odd[/b]" / "seam.duckdb"
    for name in ("evil[/b]", "[red]x[/red]"):
        assert main(["precompute", str(data), "--name", name, "--variants", "rejected", "--no-umap", "--db", str(db),
                     "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", "--db", str(db)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for literal in ("evil[/b]", "[red]x[/red]", "[b]odd[/b]"):
        assert literal in out, f"{literal!r} not printed literally by seam info:\n{out}"


def test_alias_set_shown_by_info_cleared_and_unknown_model(tmp_path, capsys):
    """`seam alias MODEL NAME` stores the name in `models` (migrating a DB written before the column existed),
    `seam info` lists it, a precompute rerun (upsert_model) keeps it, `--clear` removes it, and an unknown
    model or a taken name is one line and exit 2."""
    from analysis.data import synthetic
    from analysis.queries.base import model_aliases

    db = tmp_path / "seam.duckdb"
    synthetic.make_synthetic_db(db, 40, seed=2)
    con = store.connect(db, read_only=False)
    con.execute("ALTER TABLE models DROP COLUMN alias")  # a DB written by the version before aliases
    con.close()
    con = store.connect(db)
    assert model_aliases(con) == {}, "a DB without the alias column has no aliases"
    con.close()
    assert "alias" not in store.describe(db)["models"][0]

    assert main(["alias", "pm-sft-1k", "small PM", "--role", "policy", "--db", str(db)]) == 0
    assert "small PM" in capsys.readouterr().out
    with store.writer(db) as w:  # a precompute rerun re-registers the model
        store.upsert_model(w, "pm-sft-1k", "policy", "synthetic://pm-sft-1k", "0" * 64, {})
    con = store.connect(db)
    assert model_aliases(con) == {"pm-sft-1k": "small PM"}, model_aliases(con)
    con.close()
    assert main(["info", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "alias" in out and "small PM" in out, out

    for argv, needle in ((["alias", "no/such/model", "x"], "no model 'no/such/model'"),
                         (["alias", "pm-sft-1k", "x", "--role", "reward"], "no reward model 'pm-sft-1k'"),
                         (["alias", "rm-10k", "small PM"], "already names 'pm-sft-1k'"),
                         (["alias", "rm-10k"], "give a NAME, or --clear")):
        assert main(argv + ["--db", str(db)]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)

    assert main(["alias", "pm-sft-1k", "--clear", "--db", str(db)]) == 0
    con = store.connect(db)
    assert model_aliases(con) == {}, model_aliases(con)
    con.close()
