"""Model references are stored so they work from any directory, with what the user typed kept for display;
the same reference passed again (from anywhere, or as typed into an older DB) reuses the same model rows."""

import json

from analysis.models.resolve import canonical_ref
from analysis.models.reward import RMTrainConfig, train_reward_model
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.precompute import run_precompute
from analysis.storage import store
from test_reward import _keyword_pairs, _tiny_bert_dir

ROWS = [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(4)]


def _setup(tmp_path):
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    backbone = _tiny_bert_dir(tmp_path / "backbone")
    train_reward_model(_keyword_pairs(10), work / "models" / "rm",
                       RMTrainConfig(backbone=str(backbone), max_pairs=0, seed=1, max_length=64, device="cpu"),
                       progress=False)
    (work / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return work


def _run(db, data, reward):
    cfg = PrecomputeConfig(dataset=str(data), dataset_name="d", db=db, rewards=[reward], variants=["rejected"],
                           umap=False, progress=False, device="cpu")
    run_precompute(cfg, log=lambda m: None)


def _state(db):
    con = store.connect(db)
    try:
        models = con.execute("SELECT model, role, resolved, info->>'given' FROM models").fetchall()
        scores = con.execute("SELECT reward, count(*) FROM rm_scores GROUP BY ALL").fetchall()
        return models, scores
    finally:
        con.close()


def test_relative_reference_is_stored_absolute_and_reused_from_anywhere(tmp_path, monkeypatch):
    work = _setup(tmp_path)
    monkeypatch.chdir(work)
    _run("s.duckdb", "d.jsonl", "models/rm")  # relative, as the demo records its RMs
    models, scores = _state(work / "s.duckdb")
    absolute = str(work / "models" / "rm")
    assert [m[:2] for m in models] == [(absolute, "reward")], f"stored reference: {models}"
    assert models[0][3] == "models/rm", f"what the user typed is not kept: {models}"
    assert models[0][2] == absolute, f"resolved is not absolute: {models[0][2]}"
    assert scores == [(absolute, 8)], scores

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _run(work / "s.duckdb", work / "d.jsonl", absolute)  # the stored reference works from another folder
    monkeypatch.chdir(work)
    _run("s.duckdb", "d.jsonl", "./models/rm")
    again, scores2 = _state(work / "s.duckdb")
    assert [m[0] for m in again] == [absolute] and scores2 == scores, f"not reused: {again} {scores2}"


def test_reference_stored_as_typed_by_an_older_version_is_still_reused(tmp_path, monkeypatch):
    work = _setup(tmp_path)
    monkeypatch.chdir(work)
    db = work / "s.duckdb"
    _run(db, "d.jsonl", "models/rm")
    absolute = str(work / "models" / "rm")
    with store.writer(db) as con:  # what older versions stored: the reference exactly as typed
        con.execute("UPDATE models SET model = 'models/rm' WHERE model = ?", [absolute])
        con.execute("UPDATE rm_scores SET reward = 'models/rm' WHERE reward = ?", [absolute])
    _run(db, "d.jsonl", "models/rm")
    models, scores = _state(db)
    assert [m[0] for m in models] == ["models/rm"] and scores == [("models/rm", 8)], (
        f"the old rows were not reused: {models} {scores}")


def test_canonical_ref_keeps_hub_ids_and_builtins():
    assert canonical_ref("builtin:smollm2-135m-instruct") == "builtin:smollm2-135m-instruct"
    assert canonical_ref("Skywork/Skywork-Reward-V2-Llama-3.2-1B") == "Skywork/Skywork-Reward-V2-Llama-3.2-1B"
    assert canonical_ref("./x.gguf").startswith("/")
