"""Worse responses: seeded perturbations of the gold answer, and contrast answers from neighbour prompts."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from analysis.data.worse import PERTURBATION_KINDS, adversarial, applicable_kinds, contrast_neighbours

GOLD = ("Paris is the capital of France. It has about 2.1 million inhabitants. "
        "The Eiffel Tower was finished in 1889 for the World's Fair.")


# --------------------------------------------------------------------------- adversarial

def test_adversarial_deterministic_distinct_and_recorded():
    a = adversarial(GOLD, 8, seed=3)
    assert a == adversarial(GOLD, 8, seed=3)
    assert a != adversarial(GOLD, 8, seed=4)
    assert adversarial(GOLD, 8, seed="run:abc") == adversarial(GOLD, 8, seed="run:abc")
    texts = [t for t, _ in a]
    assert len(texts) == 8 and len(set(texts)) == 8 and GOLD not in texts
    for _, prov in a:
        assert prov["kinds"] and set(prov["kinds"]) <= set(PERTURBATION_KINDS)
        assert [op["kind"] for op in prov["ops"]] == prov["kinds"]
        assert prov["seed"] == 3
    # all 8 kinds apply to this text, and round robin uses each once for k = 8
    assert sorted(k for _, p in a for k in p["kinds"]) == sorted(PERTURBATION_KINDS)
    # asking for more extends the list: the first k are the same
    assert adversarial(GOLD, 3, seed=3) == a[:3]


def test_adversarial_leaves_global_random_alone():
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    adversarial(GOLD, 6, seed=0)
    assert [random.random() for _ in range(3)] == expected


def test_number_change_changes_numbers():
    out = adversarial(GOLD, 4, seed=1, kinds=["number_change"])
    assert len(out) == 4
    nums = re.compile(r"\d+(?:\.\d+)?|million")
    for text, prov in out:
        op = prov["ops"][0]
        assert op["kind"] == "number_change" and op["from"] != op["to"]
        assert nums.findall(text) != nums.findall(GOLD)
        assert op["to"] in text


def test_entity_and_sentence_kinds():
    text, prov = adversarial(GOLD, 1, seed=0, kinds=["entity_change"])[0]
    op = prov["ops"][0]
    assert op["from"] in GOLD and op["to"] in text and op["from"] != op["to"]
    shuffled, prov = adversarial(GOLD, 1, seed=0, kinds=["sentence_shuffle"])[0]
    assert shuffled != GOLD
    assert sorted(re.split(r"(?<=\.)\s+", shuffled)) == sorted(re.split(r"(?<=\.)\s+", GOLD))
    assert sorted(prov["ops"][0]["order"]) == [0, 1, 2]


def test_inapplicable_kinds_are_skipped():
    gold = "sure thing, happy to help with that"  # one sentence, no numbers, no entities
    kinds = applicable_kinds(gold)
    assert "number_change" not in kinds and "sentence_shuffle" not in kinds and "entity_change" not in kinds
    out = adversarial(gold, 6, seed=0)
    assert len(out) == 6
    assert {k for _, p in out for k in p["kinds"]} <= set(kinds)
    # only inapplicable kinds requested: nothing can be made
    assert adversarial(gold, 3, seed=0, kinds=["number_change"]) == []


def test_short_golds():
    one_word = adversarial("Yes", 4, seed=0)
    assert len(one_word) == 4 and all(t != "Yes" and t.strip() for t, _ in one_word)
    assert {k for _, p in one_word for k in p["kinds"]} <= {"char_insert", "char_delete", "char_swap"}
    one_char = adversarial("a", 3, seed=0)
    assert len(one_char) == 3 and all(p["kinds"] == ["char_insert"] for _, p in one_char)
    assert adversarial("", 4, seed=0) == [] and adversarial("   ", 4, seed=0) == []
    assert adversarial(GOLD, 0, seed=0) == []


def test_ops_combine_kinds_and_rate_scales_damage():
    out = adversarial(GOLD, 3, seed=0, ops=2)
    assert all(len(p["kinds"]) == 2 and len(set(p["kinds"])) == 2 for _, p in out)
    long_gold = " ".join(["word"] * 200)
    (text, prov), = adversarial(long_gold, 1, seed=0, kinds=["word_drop"], rate=0.1)
    assert len(prov["ops"][0]["dropped"]) == 20 and len(text.split()) == 180


# --------------------------------------------------------------------------- contrast

def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(0)
    P = _unit(rng.normal(size=(300, 16)))
    A = _unit(rng.normal(size=(300, 16)))
    P[10] = P[11] = P[12] = P[13]  # duplicate prompts: exact ties in similarity
    A[20] = _unit(A[21:22] + 0.05 * rng.normal(size=(1, 16)))[0]  # near-duplicate answer of 21
    P[20] = _unit(P[21:22] + 0.01 * rng.normal(size=(1, 16)))[0]  # ... to a very similar prompt
    return P, A


def _brute(P, A, k, threshold, answers=None):
    n = len(P)
    S, AA = P.astype(np.float64) @ P.T.astype(np.float64), A @ A.T
    out = []
    for i in range(n):
        ok = [j for j in range(n) if j != i and AA[i, j] < threshold
              and (answers is None or " ".join(answers[i].split()).casefold()
                   != " ".join(answers[j].split()).casefold())]
        ok.sort(key=lambda j: (-np.float32(S[i, j]), j))
        out.append(ok[:k])
    return out


def test_contrast_matches_brute_force_and_skips_self(emb):
    P, A = emb
    res = contrast_neighbours(P, A, 5)
    assert len(res) == len(P)
    assert [[j for j, _ in r] for r in res] == _brute(P, A, 5, 0.9)
    for i, r in enumerate(res):
        assert len(r) == 5 and i not in [j for j, _ in r]
        sims = [s for _, s in r]
        assert sims == sorted(sims, reverse=True)
        for j, s in r:
            assert s == pytest.approx(float(P[i] @ P[j]), abs=1e-5)


def test_contrast_respects_answer_threshold(emb):
    P, A = emb
    assert float(A[20] @ A[21]) >= 0.9 and float(P[20] @ P[21]) > 0.95
    res = contrast_neighbours(P, A, 5, threshold=0.9)
    assert 21 not in [j for j, _ in res[20]] and 20 not in [j for j, _ in res[21]]
    for i, r in enumerate(res):
        assert all(float(A[i] @ A[j]) < 0.9 for j, _ in r)
    # with a threshold above every cosine, the near-duplicate is the best contrast for 20
    assert contrast_neighbours(P, A, 1, threshold=1.01)[20][0][0] == 21
    # prompt_threshold additionally drops near-duplicate prompts
    assert all(s < 0.95 for r in contrast_neighbours(P, A, 5, threshold=1.01, prompt_threshold=0.95)
               for _, s in r)


def test_contrast_skips_identical_answer_text(emb):
    P, A = emb
    answers = [f"answer {i}" for i in range(len(P))]
    answers[11] = "  ANSWER   10 "  # same as row 10 after folding case and whitespace
    res = contrast_neighbours(P, A, 3, answers=answers)
    assert 11 not in [j for j, _ in res[10]] and 10 not in [j for j, _ in res[11]]
    assert [j for j, _ in res[10]] == [12, 13] + [_brute(P, A, 4, 0.9, answers)[10][2]]
    assert [[j for j, _ in r] for r in res] == _brute(P, A, 3, 0.9, answers)


def test_contrast_block_size_does_not_change_results(emb):
    P, A = emb
    ref = contrast_neighbours(P, A, 4, block=2048)
    for block in (13, 64, 299, 300):
        assert contrast_neighbours(P, A, 4, block=block) == ref
    # exact ties (duplicate prompts 10..13) are broken by index
    assert [j for j, _ in ref[10][:3]] == [11, 12, 13]


def test_contrast_edge_cases(emb):
    P, A = emb
    assert contrast_neighbours(P[:1], A[:1], 3) == [[]]
    assert contrast_neighbours(P[:0], A[:0], 3) == []
    small = contrast_neighbours(P[:4], A[:4], 10)
    assert all(len(r) == 3 for r in small)
    assert contrast_neighbours(P, A, 0) == [[] for _ in range(len(P))]
    with pytest.raises(ValueError):
        contrast_neighbours(P, A[:10], 3)
    with pytest.raises(ValueError):
        contrast_neighbours(P, A, 3, answers=["x"])
