"""Reward models: training demo RMs (Bradley–Terry head on a frozen encoder) and scoring with any RM.

Fast tests use a tiny, randomly initialised BERT built in the test (no weights loaded) plus the
MiniLM tokenizer files: they pin the checkpoint format, the refusals, input formatting, determinism and
the save/reload round trip. Tests marked `slow` load the real all-MiniLM-L6-v2 weights and check the RM
actually learns, on constructed QA pairs (strong signal) and on real HH-RLHF pairs when present.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,  # noqa: E402
                          BertForSequenceClassification, BertModel)

from analysis.models.reward import (CARD_NAME, RewardModel, RMTrainConfig, UnsupportedRewardModelError,  # noqa: E402
                             _InputFormatter, bundled_backbone, clear_feature_cache, read_card,
                             score_shared, shared_backbone_groups, train_reward_model)

# ../shared/data beside the checkout (SPEC §4); absent in a user's clone, so HH tests skip there.
HH_PATH = Path(__file__).resolve().parents[4] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _tokenizer():
    return AutoTokenizer.from_pretrained(bundled_backbone())


def _tiny_bert_dir(path: Path, num_labels: int = 1, seed: int = 0, base_only: bool = False) -> Path:
    """A real (tiny, random) BERT checkpoint with the MiniLM tokenizer: fast, and no weights to fetch."""
    tok = _tokenizer()
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    model = BertModel(cfg) if base_only else BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _keyword_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """Pairs with a trivially learnable signal: the chosen answer is polite, the rejected one rude."""
    rng = random.Random(seed)
    topics = ["the weather", "my homework", "a recipe", "the train times", "a good book", "python code",
              "the museum", "a birthday gift", "my garden", "the football match"]
    good = ["thank you, happy to help", "great question, here is a helpful answer",
            "sure, glad to help you"]
    bad = ["shut up, stupid question", "go away, idiot", "that is dumb, stop asking"]
    out = []
    for _ in range(n):
        t = rng.choice(topics)
        out.append((f"Can you tell me about {t}?", f"{rng.choice(good)} about {t}.",
                    f"{rng.choice(bad)} about {t}."))
    return out


def _chatterbot_pairs(seed: int = 0) -> list[tuple[str, str, str]]:
    """Human-written QA answers (chosen) vs the same answer with its words shuffled (rejected)."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    rng = random.Random(seed)
    out = []
    for f in sorted(root.glob("*.yml")):
        for conv in (yaml.safe_load(f.read_text()) or {}).get("conversations", []):
            if len(conv) < 2 or not all(isinstance(s, str) for s in conv[:2]):
                continue
            q, a = conv[0].strip(), conv[1].strip()
            words = a.split()
            if len(words) < 5:
                continue
            shuffled = words[:]
            for _ in range(10):
                rng.shuffle(shuffled)
                if shuffled != words:
                    break
            else:
                continue
            out.append((q, a, " ".join(shuffled)))
    return out


def _hh_pairs() -> list[tuple[str, str, str]]:
    """HH-RLHF transcripts -> (prompt up to the last '\\n\\nAssistant:', chosen reply, rejected reply)."""
    out = []
    with gzip.open(HH_PATH, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            chosen, rejected = row["chosen"], row["rejected"]
            cut = chosen.rfind("\n\nAssistant:") + len("\n\nAssistant:")
            prompt = chosen[:cut]
            a, b = chosen[cut:].strip(), rejected[cut:].strip() if rejected.startswith(prompt) else ""
            if a and b and a != b:
                out.append((prompt, a, b))
    return out


def _accuracy(rm: RewardModel, pairs) -> float:
    p = [x[0] for x in pairs]
    rc = rm.score(p, [x[1] for x in pairs], progress=False)
    rr = rm.score(p, [x[2] for x in pairs], progress=False)
    return float(np.mean(rc > rr))


# ------------------------------------------------------------------------------------------------
# fast: formatting, refusals, checkpoint format (tiny random BERT)
# ------------------------------------------------------------------------------------------------


def test_pair_encoding_truncates_prompt_from_the_left_and_keeps_the_response():
    tok = _tokenizer()
    fmt = _InputFormatter(tok, max_length=32)
    prompt = " ".join(f"w{i}" for i in range(200)) + " final question here"
    enc = fmt.encode([prompt], ["the answer is blue"])[0]
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert len(tokens) == 32
    text = tok.decode(enc["input_ids"])
    assert "the answer is blue" in text  # response intact
    assert "final question here" in text  # the end of the prompt (nearest the response) survives
    assert "w0 " not in text  # the start of the prompt was cut
    assert fmt.n_truncated == 1


def test_pair_encoding_cuts_an_overlong_response_but_keeps_some_prompt():
    tok = _tokenizer()
    fmt = _InputFormatter(tok, max_length=40)
    enc = fmt.encode(["what colour is the sky"], [" ".join(["blue"] * 300)])[0]
    assert len(enc["input_ids"]) <= 40
    assert "sky" in tok.decode(enc["input_ids"])


def test_chat_template_is_used_when_the_tokenizer_has_one(tmp_path):
    path = _tiny_bert_dir(tmp_path / "rm")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}")
    tok.save_pretrained(path)
    rm = RewardModel(path, device="cpu", max_length=48)
    assert rm.info()["chat_template"] is True
    enc = rm.formatter.encode(["hello " * 100 + "last words"], ["my reply"])[0]
    assert len(enc["input_ids"]) <= 48
    text = rm.tokenizer.decode(enc["input_ids"])
    assert "[ assistant ] my reply" in text and "last words" in text
    scores = rm.score(["hi", "hello " * 100], ["a", "b"], progress=False)
    assert scores.dtype == np.float64 and np.isfinite(scores).all()


def test_decoder_rm_with_chat_template_scores_padding_invariantly(tmp_path):
    """Decoder RMs (Llama-style: score at the last non-pad token, no token_type_ids) load the same way."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = _tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      num_labels=1, pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "llama_rm")
    tok.save_pretrained(tmp_path / "llama_rm")
    rm = RewardModel(tmp_path / "llama_rm", device="cpu", batch_size=3)
    info = rm.info()
    assert info["family"] == "llama" and info["chat_template"] is True and info["max_length"] == 128
    prompts, responses = ["hi", "tell me " * 20, "", "why?"], ["hello there", "no", "", "because " * 50]
    batched = rm.score(prompts, responses, progress=False)
    single = np.array([rm.score([p], [r], progress=False)[0] for p, r in zip(prompts, responses)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_refuses_non_scalar_models_with_a_clear_error(tmp_path):
    path = _tiny_bert_dir(tmp_path / "clf2", num_labels=2)
    with pytest.raises(UnsupportedRewardModelError, match=r"num_labels=2.*scalar reward models"):
        RewardModel(path, device="cpu")


def test_refuses_a_checkpoint_without_a_trained_head(tmp_path):
    path = _tiny_bert_dir(tmp_path / "base", base_only=True)
    cfg = json.loads((path / "config.json").read_text())
    cfg["num_labels"] = 1
    cfg["id2label"] = {"0": "LABEL_0"}
    cfg["label2id"] = {"LABEL_0": 0}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedRewardModelError, match="not a trained reward model"):
        RewardModel(path, device="cpu")


def test_score_keeps_input_order_across_length_sorted_batches(tmp_path):
    rm = RewardModel(_tiny_bert_dir(tmp_path / "rm"), device="cpu", batch_size=2)
    prompts = ["q " * n for n in (3, 40, 1, 17, 9, 0)]
    responses = ["a " * n for n in (5, 1, 30, 2, 12, 0)]  # the last pair: empty prompt and response
    batched = rm.score(prompts, responses, progress=False)
    one_by_one = np.array([rm.score([p], [r], progress=False)[0] for p, r in zip(prompts, responses)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert rm.score([], [], progress=False).shape == (0,)
    info = rm.info()
    assert info["num_labels"] == 1 and info["family"] == "bert" and info["chat_template"] is False
    assert info["n_params"] > 0 and info["dtype"] == "float32" and info["device"] == "cpu"


def test_tiny_backbone_training_round_trip_determinism_and_atomic_write(tmp_path):
    backbone = _tiny_bert_dir(tmp_path / "backbone")
    pairs = _keyword_pairs(120)
    cfg = RMTrainConfig(backbone=str(backbone), epochs=30, lr=3e-3, val_fraction=0.0, max_length=64,
                        device="cpu")
    out = tmp_path / "rms" / "rm"
    rep = train_reward_model(pairs, out, cfg, progress=False)
    assert rep["n_pairs"] == 120 and rep["n_val"] == 0
    assert rep["train_accuracy"] > 0.9  # even a random tiny encoder separates polite from rude
    assert rep["loss_curve"]["train_loss"][-1] < rep["loss_curve"]["train_loss"][0]
    assert rep["reload_check"]["n"] == 8 and rep["reload_check"]["max_abs_diff"] < 1e-5
    # Standard checkpoint: plain transformers loads it as a scalar classifier with nothing missing.
    model, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert isinstance(model, BertForSequenceClassification) and model.config.num_labels == 1
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # Reload reproduces training-time scores: the same accuracy on the same pairs.
    rm = RewardModel(out, device="cpu")
    assert _accuracy(rm, pairs) == pytest.approx(rep["train_accuracy"])
    assert read_card(out)["train_accuracy"] == rep["train_accuracy"]
    assert rm.info()["seam_rm"]["n_pairs"] == 120
    assert rm.max_length == 64  # scored at the length the head was trained on, not the 512 default
    assert rm.info()["path"] == str(out.resolve())
    # Same seed -> identical RM; retraining in place swaps the dir atomically and leaves no temp dirs.
    clear_feature_cache()
    rep2 = train_reward_model(pairs, out, cfg, progress=False)
    assert rep2["loss_curve"] == rep["loss_curve"]
    s1 = rm.score([p for p, _, _ in pairs[:10]], [c for _, c, _ in pairs[:10]], progress=False)
    s2 = RewardModel(out, device="cpu").score([p for p, _, _ in pairs[:10]], [c for _, c, _ in pairs[:10]],
                                              progress=False)
    np.testing.assert_array_equal(s1, s2)
    assert sorted(p.name for p in out.parent.iterdir()) == ["rm"]


def test_untrained_rm_is_valid_and_seeded(tmp_path):
    backbone = _tiny_bert_dir(tmp_path / "backbone")
    pairs = _keyword_pairs(30)
    scores = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = RMTrainConfig(backbone=str(backbone), max_pairs=0, seed=seed, max_length=64, device="cpu")
        rep = train_reward_model(pairs, tmp_path / name, cfg, progress=False)
        assert rep["n_pairs"] == 0 and rep["train_accuracy"] is None and rep["loss_curve"]["epoch"] == []
        assert (tmp_path / name / CARD_NAME).is_file()
        rm = RewardModel(tmp_path / name, device="cpu")
        scores[name] = rm.score(["hi", "yo"], ["a", "b"], progress=False)
    np.testing.assert_array_equal(scores["a"], scores["b"])
    assert not np.allclose(scores["a"], scores["c"])


def test_validation_split_is_fixed_and_training_subsets_are_nested(tmp_path):
    backbone = _tiny_bert_dir(tmp_path / "backbone")
    pairs = _keyword_pairs(60)
    reps = [train_reward_model(pairs, tmp_path / f"rm{m}", RMTrainConfig(
        backbone=str(backbone), max_pairs=m, val_fraction=0.2, max_length=64, device="cpu", epochs=2),
        progress=True) for m in (0, 10, 1000)]
    assert [r["n_val"] for r in reps] == [12, 12, 12]
    assert [r["n_pairs"] for r in reps] == [0, 10, 48]
    assert reps[2]["max_pairs_capped"] is True
    with pytest.raises(ValueError, match="triple"):
        train_reward_model([("only", "two")], tmp_path / "bad", RMTrainConfig(backbone=str(backbone)),
                           progress=False)


# ------------------------------------------------------------------------------------------------
# slow: the real bundled MiniLM backbone
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chatterbot_rm(tmp_path_factory):
    pairs = _chatterbot_pairs()
    out = tmp_path_factory.mktemp("rm") / "chatterbot"
    cfg = RMTrainConfig(max_pairs=400, val_fraction=0.15, max_val_pairs=150, max_length=96, seed=0)
    rep = train_reward_model(pairs, out, cfg, progress=False)
    return pairs, out, rep


@pytest.mark.slow
def test_minilm_rm_learns_fluent_vs_scrambled_answers(chatterbot_rm):
    _, out, rep = chatterbot_rm
    assert rep["n_pairs"] == 400 and rep["n_val"] == 150
    assert rep["backbone_name"] == "all-MiniLM-L6-v2 (bundled)"
    assert rep["val_accuracy"] >= 0.8, rep  # chance is 0.5
    assert rep["reload_check"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_minilm_rm_round_trip_matches_plain_transformers(chatterbot_rm):
    pairs, out, _ = chatterbot_rm
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    prompts, responses = [p for p, _, _ in pairs[:6]], [c for _, c, _ in pairs[:6]]
    with torch.inference_mode():
        plain = model(**tok(prompts, responses, padding=True, return_tensors="pt")).logits[:, 0].numpy()
    ours = RewardModel(out, device="cpu").score(prompts, responses, progress=False)
    np.testing.assert_allclose(ours, plain, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not HH_PATH.is_file(), reason=f"HH-RLHF test data not present at {HH_PATH} "
                    "(it ships only beside the developer checkout, not in a user's clone)")
def test_minilm_rm_learns_on_real_hh_pairs(tmp_path):
    pairs = _hh_pairs()
    assert len(pairs) > 2000
    # 600 pairs -> 60 held out, 300 trained on; 128 tokens keeps the feature pass short on a CPU.
    common = dict(val_fraction=0.1, max_length=128)
    untrained = train_reward_model(pairs[:600], tmp_path / "rm0", RMTrainConfig(max_pairs=0, **common),
                                   progress=False)
    trained = train_reward_model(pairs[:600], tmp_path / "rm300", RMTrainConfig(max_pairs=300, **common),
                                 progress=False)
    assert untrained["n_val"] == trained["n_val"] == 60 and trained["n_pairs"] == 300
    # It fits its training pairs and is no worse than the untrained RM on held-out ones. (Held-out
    # accuracy of a frozen-MiniLM RM on HH harmless is only ~0.55-0.58 — see analysis/reward.py — so
    # 60 pairs cannot show it above chance reliably; the full-size figures are in the project notes.)
    assert trained["train_accuracy"] > 0.6, trained
    assert trained["val_loss"] < untrained["val_loss"] + 0.01, (trained, untrained)
    assert RewardModel(tmp_path / "rm300", device="cpu").score([pairs[0][0]], [pairs[0][1]],
                                                               progress=False).shape == (1,)


def _trained_rms(root: Path, sizes=(0, 16, 48), **kw) -> list[RewardModel]:
    pairs = _chatterbot_pairs()[:80]
    refs = []
    for n in sizes:
        out = root / f"rm-{n}"
        train_reward_model(pairs, out, RMTrainConfig(max_pairs=n, max_length=64, seed=n, epochs=2, **kw),
                           progress=False)
        refs.append(str(out))
    return refs


@pytest.mark.slow
def test_rms_on_one_frozen_minilm_share_its_pass_and_score_exactly_as_alone(tmp_path):
    """The demo's situation: 3 Bradley-Terry heads on the bundled MiniLM. One encoder pass must give each RM
    the scores it gives alone; an RM with another input limit (or no card) is scored on its own."""
    refs = _trained_rms(tmp_path)
    other = tmp_path / "rm-len32"
    train_reward_model(_chatterbot_pairs()[:80], other, RMTrainConfig(max_pairs=16, max_length=32, seed=3),
                       progress=False)
    plain = tmp_path / "plain"  # same weights as rm-16 but without a card: a "hub" RM, loaded on its own
    import shutil
    shutil.copytree(refs[1], plain)
    (plain / CARD_NAME).unlink()
    groups = shared_backbone_groups(refs + [str(other), str(plain)])
    assert groups == [refs + [str(other)], [str(plain)]], groups
    rms = [RewardModel(r, batch_size=8) for r in refs + [str(other)]]
    prompts = [q for q, _, _ in _chatterbot_pairs()[80:110]]
    responses = [a for _, a, _ in _chatterbot_pairs()[110:140]]
    shared = score_shared(rms, prompts, responses)
    for ref, rm, got in zip(refs + [str(other)], rms, shared):
        alone = rm.score(prompts, responses, progress=False)
        diff = float(np.max(np.abs(got - alone)))
        assert diff <= 1e-6, f"{ref}: shared-pass scores differ from separate scoring by {diff:.2e}"
    assert len({tuple(np.round(x, 6)) for x in shared}) == 4, "the heads must differ (else the test proves nothing)"


def test_fit_many_spreads_heads_over_processes_and_equals_fit_one_by_one():
    """`FrozenHeads.fit_many` (forked workers) must give the very heads `fit` gives, in job order."""
    import dataclasses

    from analysis.models.reward import FrozenHeads

    heads = FrozenHeads(RMTrainConfig(epochs=3))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 40, heads.model.config.hidden_size)).astype(np.float32)
    jobs = [(feats[0], feats[1], 0, None), (feats[1], feats[2], 1, dataclasses.replace(heads.config, lr=1e-3)),
            (feats[0][:0], feats[1][:0], 2, None)]
    alone = [heads.fit(*j) for j in jobs]
    many = heads.fit_many(jobs, workers=2)
    for k, (a, b) in enumerate(zip(alone, many)):
        sa, sb = FrozenHeads.score(a, feats[2]), FrozenHeads.score(b, feats[2])
        assert np.array_equal(sa, sb), f"job {k}: max |diff| {np.abs(sa - sb).max()}"
    assert not np.array_equal(FrozenHeads.score(many[0], feats[2]), FrozenHeads.score(many[1], feats[2])), \
        "different jobs must give different heads (results returned out of order?)"
