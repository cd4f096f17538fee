"""Policy model (PM): log-prob scoring of responses and sampling of new ones.

SEAM needs `l(y) = sum_t log pi(y_t | x, y_<t)` for the gold and k worse responses of every prompt (README "Definitions"). The
reference code computes it one sequence at a time with a full-vocabulary log-softmax at every position; that is
the oracle here (`reference_logprob`) and the slow baseline of `benchmarks/bench_pm_scoring.py`. `PolicyModel.score`
computes the same numbers faster (benchmarks/bench_pm_scoring.py) by

* encoding the prompt and the response(+EOS) separately and concatenating the ids, in every code path, so the
  prompt/response boundary (and hence `n(y)`) is identical in the oracle and the fast path;
* running each distinct prompt once and sharing its KV cache across all of its responses (the cache rows are
  gathered per response batch), so k+1 responses cost one prompt pass, not k+1;
* bucketing by length (longest first, so an out-of-memory shows up on the first batch) under a budget of padded
  tokens per forward pass (`token_budget`, counting the cached prompt positions too, which bounds KV memory);
* applying the LM head only to the hidden states of response positions, in row chunks, with `logsumexp` on those
  rows: no `[batch, seq, vocab]` tensor ever exists (Gemma's vocabulary is 262k);
* `torch.inference_mode`, SDPA attention, bf16 on GPU (via `analysis.models.devices`).

Prompts longer than `max_length - n(y)` are left-truncated and the number of dropped prompt tokens is reported
(`score_detailed`), never hidden; a response that alone does not fit gets a NaN log-prob rather than a wrong one.
With `shared_context` the cut is made once per prompt, for its longest response: every response of a prompt is
then conditioned on the same tokens (what a comparison of them needs) and the prompt still runs once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch

from analysis.models.devices import pick_device, pick_dtype
from analysis.data.ingest import transcript_to_messages
from analysis.models.resolve import default_models_dir, model_info, resolve_model

log = logging.getLogger(__name__)

PAPER_PROMPT_FORMAT = "Question: {x}\n\nAnswer: "
"""The paper's format, used when the PM has no chat template (e.g. Gemma-3-270M base)."""

WORSE_ANSWER_INSTRUCTION = (
    "Write a short answer to the question below that sounds plausible but is wrong or unhelpful. "
    "Do not say that it is wrong and do not explain.\n\nQuestion: {prompt}"
)
"""Wraps a prompt for the `generated` worse-response variant. A 135M PM often answers correctly anyway (measured on the demo),
which is why the pipeline records what was actually produced."""

# rows x vocab per LM-head chunk: 32M floats = 128 MiB of fp32 logits on CPU, 4x that on a GPU (fewer launches)
_HEAD_CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 27}
_PAD_SLACK_TOKENS = 8  # a batch takes items up to max(this, a quarter of its width) shorter than its longest
_MIN_RESPONSES_TO_SHARE = 1.5  # below this mean (responses per distinct prompt) sharing only adds a forward pass


@dataclass
class PolicyConfig:
    """How to load and batch the PM. `token_budget` = padded tokens per forward pass; raise it on a GPU."""

    device: str = "auto"
    dtype: str = "auto"
    max_length: int = 1024
    token_budget: int = 4096
    attn_implementation: str = "sdpa"
    share_prompt_cache: bool = True  # False: one flat padded sequence per pair (fallback / benchmark control)
    # True: a prompt that must be cut is cut once, to fit its longest (scorable) response, so all its responses
    # are conditioned on the same tokens and share one prompt pass. False: each pair keeps as much prompt as fits
    # itself, so a long prompt splits into one context (and one prompt pass) per response length.
    shared_context: bool = False


class Generation(NamedTuple):
    """One sampled response. `truncated`: it hit `max_new_tokens` before its EOS (the text is cut there)."""

    text: str
    n_tokens: int  # new tokens, incl. the closing EOS when there is one
    truncated: bool


class ScoreResult(NamedTuple):
    """One scored (prompt, response) pair. `logprob` is NaN only when the response alone exceeds max_length."""

    logprob: float
    n_tokens: int  # response tokens incl. the closing EOS = n(y)
    prompt_tokens: int  # prompt tokens actually conditioned on
    truncated_prompt_tokens: int  # prompt tokens dropped on the left to fit max_length (0 = exact)


# ----------------------------------------------------------------------------------------------------------------
# tokenization shared by every code path
# ----------------------------------------------------------------------------------------------------------------

def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """The PM's chat template (user turn + generation prompt) when it has one, else the paper's format.

    HH-style transcripts ("\n\nHuman: ... \n\nAssistant:") become real multi-turn chats, so a chat PM
    sees the dialogue the way it was trained to, not a transcript pasted into one user message.
    """
    if has_chat_template(tokenizer):
        messages = transcript_to_messages(prompt) or [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PAPER_PROMPT_FORMAT.format(x=prompt)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself prepends BOS (Gemma, Llama-2 do; SmolLM2, Qwen do not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(with_special) and with_special[0] == bos


def encode_prompt(tokenizer: Any, formatted_prompt: str) -> list[int]:
    """Token ids of an already formatted prompt.

    A chat-template rendering already contains its own special tokens (as `apply_chat_template(tokenize=True)`
    assumes), so nothing is added; the plain paper format gets the BOS the tokenizer would add (Gemma needs it).
    """
    ids = list(tokenizer(formatted_prompt, add_special_tokens=False)["input_ids"])
    if not has_chat_template(tokenizer) and _adds_bos(tokenizer) and ids[:1] != [tokenizer.bos_token_id]:
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def eos_token_id(tokenizer: Any, model: Any = None) -> int:
    """The id that closes a response: the tokenizer's EOS (end of turn for chat models), else the model's."""
    eos = tokenizer.eos_token_id
    if eos is None and model is not None:
        eos = getattr(model.generation_config, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
    if eos is None:
        raise ValueError("the PM's tokenizer has no EOS token; cannot close responses")
    return int(eos)


def encode_response(tokenizer: Any, response: str, eos_id: int) -> list[int]:
    """Response ids (no special tokens added) closed by EOS: the model must also predict that it stops."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [eos_id]


def truncate_prompt(prompt_ids: Sequence[int], n_response: int, max_length: int,
                    bos_id: int | None = None) -> tuple[list[int], int]:
    """Left-truncate the prompt so prompt + response fits `max_length`; keep a leading BOS. Returns (ids, dropped).

    The response is never cut (that would change l(y)); callers handle `n_response >= max_length` themselves.
    """
    ids = list(prompt_ids)
    room = max_length - n_response
    if len(ids) <= room:
        return ids, 0
    if room < 1:
        raise ValueError(f"response of {n_response} tokens leaves no room for the prompt in max_length={max_length}")
    keep_bos = bos_id is not None and ids[:1] == [bos_id] and room >= 2
    kept = ([bos_id] if keep_bos else []) + ids[len(ids) - (room - int(keep_bos)):]
    return kept, len(ids) - len(kept)


def pack_by_length(lengths: Sequence[int], token_budget: int, extra: int = 0) -> list[list[int]]:
    """Greedy length bucketing: indices sorted longest first, each batch padded to its first (longest) item and
    holding as many items as fit `len(batch) * (max_len + extra) <= token_budget` (at least one), and only items
    at most `max(8, max_len // 4)` tokens shorter than the batch's longest.

    `extra` is per-row context outside the padded input (the shared prompt's cached positions), so the budget also
    bounds attention/KV memory. Longest first makes a too-large budget fail on the first batch, not after an hour.
    The padding bound matters because a forward costs about the same per position whatever the batch shape (on
    CPU a [16 x 256] pass runs within 15% of a [128 x 32] one), so padded positions are pure loss: without it,
    chatterbot-length answers gave batches that were half padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        if current and ((len(current) + 1) * (width + extra) > token_budget
                        or width - lengths[i] > max(_PAD_SLACK_TOKENS, width // 4)):
            batches.append(current)
            current = []
        if not current:
            width = lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


# ----------------------------------------------------------------------------------------------------------------
# oracle
# ----------------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token sequences padded on the left to the longest (decoder batches
    must end where generation or scoring continues)."""
    width = max(len(x) for x in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, x in enumerate(seqs):
        input_ids[row, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
        mask[row, width - len(x):] = 1
    return input_ids, mask


def reference_logprob(model: Any, tokenizer: Any, formatted_prompt: str, response: str) -> tuple[float, int]:
    """The straightforward computation (one sequence, full log-softmax, no padding): the oracle for `score`.

    Same tokenization as the fast path (`encode_prompt` + `encode_response`), so any difference is numerics.
    """
    prompt_ids = encode_prompt(tokenizer, formatted_prompt)
    response_ids = encode_response(tokenizer, response, eos_token_id(tokenizer, model))
    return reference_logprob_ids(model, prompt_ids, response_ids), len(response_ids)


@torch.inference_mode()
def reference_logprob_ids(model: Any, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
    """`reference_logprob` on given ids: the oracle for a context `score` cut itself (e.g. `shared_context`)."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=next(model.parameters()).device)
    logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    p = len(prompt_ids)
    targets = ids[0, p:]
    picked = logprobs[p - 1:-1].gather(1, targets[:, None]).squeeze(1)
    return float(picked.double().sum())


# ----------------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class _Pair:
    index: int  # position in the caller's input
    response_ids: list[int]
    dropped: int


class PolicyModel:
    """A causal LM used as the PM: loads any `from_pretrained` reference (see `analysis.models.resolve.resolve_model`)."""

    def __init__(self, ref: str, models_dir: Path | str | None = None, config: PolicyConfig | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = ref
        self.config = config or PolicyConfig()
        self.resolved = resolve_model(ref, models_dir if models_dir is not None else default_models_dir())
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.resolved)
        try:
            model = AutoModelForCausalLM.from_pretrained(self.resolved, dtype=self.dtype,
                                                         attn_implementation=self.config.attn_implementation)
        except (ValueError, ImportError) as exc:  # e.g. an architecture without SDPA support
            log.warning("attn_implementation=%r unavailable (%s); using the model default",
                        self.config.attn_implementation, exc)
            model = AutoModelForCausalLM.from_pretrained(self.resolved, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_id = eos_token_id(self.tokenizer, self.model)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.chat = has_chat_template(self.tokenizer)
        self.last_truncated = 0  # pairs whose prompt was left-truncated in the latest score() call
        self.last_mode = ""  # "shared" (prompt KV reused) or "flat" (one sequence per pair) in the latest call
        self._decoder = self.model.get_decoder()
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._fast_head = True
        self._fast_head = self._check_fast_head()
        if self.config.share_prompt_cache and not _cache_is_sliceable(self.model.config):
            log.warning("%s: its KV cache holds more than plain keys/values (e.g. recurrent states); prompt "
                        "sharing is off, every pair is scored as its own sequence", ref)
            self.config = dataclasses.replace(self.config, share_prompt_cache=False)

    # -- formatting ------------------------------------------------------------------------------------------

    def format_prompt(self, prompt: str) -> str:
        return format_prompt(self.tokenizer, prompt)

    def encode_prompt(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.format_prompt(prompt))

    def info(self) -> dict[str, Any]:
        info = model_info(self.model, ref=self.ref, resolved=self.resolved)
        info.update(
            path=self.resolved,  # what from_pretrained loaded (the pipeline records it with the digest)
            prompt_format="chat_template" if self.chat else PAPER_PROMPT_FORMAT,
            eos_token=self.tokenizer.convert_ids_to_tokens(self.eos_id),
            max_length=self.config.max_length,
            token_budget=self.config.token_budget,
            attn_implementation=getattr(self.model.config, "_attn_implementation", None),
            share_prompt_cache=self.config.share_prompt_cache,
            fast_head=self._fast_head,
        )
        return info

    # -- LM head on selected rows ----------------------------------------------------------------------------

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for a few hidden rows, reproducing the CausalLM head (incl. Gemma-2 style soft-capping)."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _forward(self, **kwargs: Any) -> torch.Tensor:
        """Per-position states: decoder hidden states (fast head) or full logits (fallback for exotic heads)."""
        cache = kwargs.pop("cache", None)
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if self._fast_head:
            return self._decoder(**kwargs).last_hidden_state
        return self.model(**kwargs).logits

    def _row_logprobs(self, states: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(targets[j] | states[rows[j]]) for each j, computing logsumexp once per distinct state row and
        never more than `_HEAD_CHUNK_ELEMENTS` logits at a time."""
        out = torch.empty(len(targets), dtype=torch.float64, device=states.device)
        vocab = self.model.config.get_text_config().vocab_size or 1
        chunk = max(1, _HEAD_CHUNK_ELEMENTS.get(states.device.type, 1 << 25) // vocab)
        for start in range(0, states.shape[0], chunk):
            stop = min(start + chunk, states.shape[0])
            sel = (rows >= start) & (rows < stop)
            if not bool(sel.any()):
                continue
            block = states[start:stop]
            logits = (self._head(block) if self._fast_head else block).float()
            lse = torch.logsumexp(logits, dim=-1)
            local = rows[sel] - start
            picked = logits[local, targets[sel]] - lse[local]
            out[sel] = picked.double()
        return out

    @torch.inference_mode()
    def _check_fast_head(self) -> bool:
        """Decoder + LM head must reproduce the model's own logits; architectures that post-process logits in a
        way `_head` does not know get the (memory-hungrier) full-logits path instead of wrong numbers."""
        ids = torch.tensor([encode_prompt(self.tokenizer, self.format_prompt("Hello, who are you?"))],
                           device=self.device)
        want = self.model(input_ids=ids).logits[0, -1].float()
        got = self._head(self._decoder(input_ids=ids).last_hidden_state[0, -1:]).float()[0]
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        ok = torch.allclose(want, got, atol=tol * max(1.0, float(want.abs().max())), rtol=0)
        if not ok:
            log.warning("%s: decoder+lm_head does not reproduce the model logits; scoring falls back to full "
                        "logits (slower, more memory)", self.ref)
        return ok

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`left_pad` on the model's device: every row's last token in the last column, so the last
        position's state/logits belong to every row."""
        input_ids, mask = left_pad(rows, self.pad_id)
        return input_ids.to(self.device), mask.to(self.device)

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              progress: bool = True) -> list[tuple[float, int]]:
        """(l(y), n(y)) per (prompt, response) pair, in input order. See `score_detailed` for truncation info."""
        return [(r.logprob, r.n_tokens) for r in self.score_detailed(prompts, responses, progress=progress)]

    @torch.inference_mode()
    def score_detailed(self, prompts: Sequence[str], responses: Sequence[str],
                       progress: bool = True) -> list[ScoreResult]:
        """Like `score`, plus how many prompt tokens were conditioned on and how many were cut to fit.

        Identical prompts (after formatting and truncation) are encoded and run once. The shared-prompt path is
        used when prompts repeat enough to pay for its extra forward pass (`last_mode` says which ran).
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        max_length = self.config.max_length
        bos = self.tokenizer.bos_token_id
        results: list[ScoreResult | None] = [None] * len(prompts)
        encoded: dict[str, list[int]] = {}
        scorable: list[tuple[int, str, list[int]]] = []
        longest: dict[str, int] = {}  # per prompt: its longest scorable response (the shared-context window)
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            if prompt not in encoded:
                encoded[prompt] = self.encode_prompt(prompt)
            response_ids = encode_response(self.tokenizer, response, self.eos_id)
            if len(response_ids) >= max_length:
                log.warning("pair %d: response of %d tokens does not fit max_length=%d; log-prob left NaN",
                            i, len(response_ids), max_length)
                results[i] = ScoreResult(math.nan, len(response_ids), 0, len(encoded[prompt]))
                continue
            scorable.append((i, prompt, response_ids))
            longest[prompt] = max(longest.get(prompt, 0), len(response_ids))
        groups: dict[tuple[int, ...], list[_Pair]] = {}
        for i, prompt, response_ids in scorable:
            fit = longest[prompt] if self.config.shared_context else len(response_ids)
            ids, dropped = truncate_prompt(encoded[prompt], fit, max_length, bos)
            groups.setdefault(tuple(ids), []).append(_Pair(i, response_ids, dropped))
        self.last_truncated = sum(p.dropped > 0 for g in groups.values() for p in g)
        if self.last_truncated:
            log.warning("%d of %d pairs had their prompt left-truncated to fit max_length=%d",
                        self.last_truncated, len(prompts), max_length)

        bar = _progress(total=len(prompts), enabled=progress, desc="PM scoring")
        bar.update(sum(r is not None for r in results))
        group_items = list(groups.items())
        n_pairs = sum(len(g) for g in groups.values())
        if self.config.share_prompt_cache and n_pairs >= _MIN_RESPONSES_TO_SHARE * max(1, len(groups)):
            self.last_mode = "shared"
            self._score_shared(group_items, results, bar)
        else:
            self.last_mode = "flat"
            self._score_flat(group_items, results, bar)
        bar.close()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _score_shared(self, group_items: list[tuple[tuple[int, ...], list[_Pair]]],
                      results: list[ScoreResult | None], bar: Any) -> None:
        """Prompt pass once per distinct prompt (left-padded batch, KV cached), then response passes over the
        gathered cache rows. The first response token is predicted by the prompt's last hidden state."""
        from transformers import DynamicCache

        budget = self.config.token_budget
        for prompt_batch in pack_by_length([len(ids) for ids, _ in group_items], budget):
            prompts = [list(group_items[g][0]) for g in prompt_batch]
            input_ids, mask = self._left_pad(prompts)
            width = input_ids.shape[1]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            states = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                   cache=cache, use_cache=True)
            last = states[:, -1]  # left padding: the last column is every prompt's last real token
            prompt_lens = mask.sum(-1)

            # every response of this prompt batch: (row in prompt batch, pair)
            pairs = [(row, pair) for row, g in enumerate(prompt_batch) for pair in group_items[g][1]]
            first = self._row_logprobs(
                last, torch.tensor([row for row, _ in pairs], device=self.device),
                torch.tensor([pair.response_ids[0] for _, pair in pairs], device=self.device))
            totals = first.clone()

            rest = [j for j, (_, pair) in enumerate(pairs) if len(pair.response_ids) > 1]
            for sub in pack_by_length([len(pairs[j][1].response_ids) - 1 for j in rest], budget, extra=width):
                members = [rest[s] for s in sub]
                rows = torch.tensor([pairs[j][0] for j in members], device=self.device)
                inputs = [pairs[j][1].response_ids[:-1] for j in members]  # the last token (EOS) is only a target
                r_width = max(len(x) for x in inputs)
                r_ids = torch.full((len(inputs), r_width), self.pad_id, dtype=torch.long)
                r_mask = torch.zeros((len(inputs), r_width), dtype=torch.long)
                for b, ids in enumerate(inputs):
                    r_ids[b, :len(ids)] = torch.tensor(ids)
                    r_mask[b, :len(ids)] = 1
                r_ids, r_mask = r_ids.to(self.device), r_mask.to(self.device)
                r_pos = prompt_lens[rows][:, None] + torch.arange(r_width, device=self.device)[None, :]
                r_states = self._forward(input_ids=r_ids, attention_mask=torch.cat([mask[rows], r_mask], dim=1),
                                         position_ids=r_pos, cache=_select_cache(cache, rows), use_cache=True)
                valid = r_mask.bool()
                flat = r_states[valid]  # row-major: response b's positions 0..len-1, then b+1, ...
                targets = torch.tensor([t for j in members for t in pairs[j][1].response_ids[1:]],
                                       device=self.device)
                lp = self._row_logprobs(flat, torch.arange(len(flat), device=self.device), targets)
                owner = torch.repeat_interleave(torch.arange(len(members), device=self.device), valid.sum(-1))
                sums = torch.zeros(len(members), dtype=torch.float64, device=self.device).index_add_(0, owner, lp)
                totals[torch.tensor(members, device=self.device)] += sums
                del r_states, flat
            for j, (row, pair) in enumerate(pairs):
                results[pair.index] = ScoreResult(float(totals[j]), len(pair.response_ids), int(prompt_lens[row]),
                                                  pair.dropped)
            bar.update(len(pairs))
            del cache, states

    def _score_flat(self, group_items: list[tuple[tuple[int, ...], list[_Pair]]],
                    results: list[ScoreResult | None], bar: Any) -> None:
        """One right-padded sequence per pair (no prompt sharing): the fallback for caches `_select_cache` cannot
        slice, and the control arm of the benchmark. Still bucketed and response-rows-only."""
        flat = [(list(ids), pair) for ids, pairs in group_items for pair in pairs]
        lengths = [len(ids) + len(pair.response_ids) - 1 for ids, pair in flat]
        for batch in pack_by_length(lengths, self.config.token_budget):
            width = max(lengths[i] for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target_pos = torch.zeros((len(batch), width), dtype=torch.bool)
            targets: list[int] = []
            for b, i in enumerate(batch):
                ids, pair = flat[i]
                seq = ids + pair.response_ids[:-1]
                input_ids[b, :len(seq)] = torch.tensor(seq)
                mask[b, :len(seq)] = 1
                target_pos[b, len(ids) - 1:len(seq)] = True  # state at t predicts token t+1
                targets.extend(pair.response_ids)
            states = self._forward(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
            target_pos = target_pos.to(self.device)
            rows = states[target_pos]
            lp = self._row_logprobs(rows, torch.arange(len(rows), device=self.device),
                                    torch.tensor(targets, device=self.device))
            owner = torch.repeat_interleave(torch.arange(len(batch), device=self.device), target_pos.sum(-1))
            sums = torch.zeros(len(batch), dtype=torch.float64, device=self.device).index_add_(0, owner, lp)
            for b, i in enumerate(batch):
                ids, pair = flat[i]
                results[pair.index] = ScoreResult(float(sums[b]), len(pair.response_ids), len(ids), pair.dropped)
            bar.update(len(batch))
            del states

    # -- generation ------------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, n: int = 1, instruction: str | None = None,
                 max_new_tokens: int = 48, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                 batch_size: int = 32, progress: bool = True) -> list[list[str]]:
        """`n` sampled response texts per prompt; see `generate_detailed` (which also says which were cut)."""
        return [[g.text for g in row] for row in self.generate_detailed(
            prompts, n=n, instruction=instruction, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, batch_size=batch_size, progress=progress)]

    @torch.inference_mode()
    def generate_detailed(self, prompts: Sequence[str], *, n: int = 1, instruction: str | None = None,
                          max_new_tokens: int = 48, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                          batch_size: int = 32, progress: bool = True) -> list[list[Generation]]:
        """`n` sampled responses per prompt, each until its own EOS or `max_new_tokens` (then `truncated`).

        Why a loop of our own rather than `transformers.generate` (kept as `generate_hf`, the benchmark's
        baseline and the fallback for caches we cannot slice): on CPU a decode step costs about the same for
        8 rows as for 32 (the weights are read once per step either way), so throughput comes from
        wide batches that do not carry dead rows. Here

        * each prompt is run once and its KV cache is copied to its `n` draws (generate repeats the prompt);
        * prompts are length-sorted into left-padded batches of `batch_size` prompts;
        * a row that emits EOS leaves the batch at once (its KV rows are dropped), so a batch costs what its
          live rows cost, not what its longest answer costs;
        * nucleus sampling looks at the top 256 tokens and widens to the full vocabulary only for a row whose
          nucleus is larger (exact, and no full-vocabulary sort per step).

        Reproducibility: every draw (prompt index i, draw j) has its own uniform stream seeded from
        (`seed`, i, j) and used by inverse-CDF sampling, so a rerun with the same seed and inputs writes the same
        texts, and a draw does not depend on which other rows share its batch or when they stop (up to the float
        rounding of a different batch shape). The distribution is the one of `generate(do_sample=True,
        temperature, top_p, top_k=0)`; `temperature=0` is greedy.
        """
        if not _cache_is_sliceable(self.model.config):
            return self.generate_hf(prompts, n=n, instruction=instruction, max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
                                    progress=progress, detailed=True)
        texts = [self.format_prompt(_wrap(p, instruction)) for p in prompts]
        limit = max(1, self.config.max_length - max_new_tokens)
        bos = self.tokenizer.bos_token_id
        ids = [truncate_prompt(encode_prompt(self.tokenizer, t), 0, limit, bos)[0] for t in texts]
        out: list[list[Generation | None]] = [[None] * n for _ in ids]
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        bar = _progress(total=len(ids), enabled=progress, desc="PM sampling")
        stops = self._stop_ids()
        for start in range(0, len(order), max(1, batch_size)):
            members = order[start:start + max(1, batch_size)]
            uniforms = torch.stack([_draw_uniforms(seed, i, j, max_new_tokens) for i in members for j in range(n)])
            rows = self._sample_batch([ids[i] for i in members], n, max_new_tokens, temperature, top_p,
                                      uniforms, stops)
            for r, tokens in enumerate(rows):
                i, j = members[r // n], r % n
                truncated = not tokens or tokens[-1] not in stops
                body = tokens if truncated else tokens[:-1]
                text = self._clean(self.tokenizer.decode(body, skip_special_tokens=True))
                out[i][j] = Generation(text, len(tokens), truncated)
            bar.update(len(members))
        bar.close()
        return out  # type: ignore[return-value]

    def _stop_ids(self) -> set[int]:
        """EOS of the tokenizer plus any end ids of the model's generation config (what generate stops on)."""
        ids = {self.eos_id}
        extra = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(extra if isinstance(extra, (list, tuple)) else [] if extra is None else [extra])
        return {int(i) for i in ids}

    def _sample_batch(self, prompt_ids: list[list[int]], n: int, max_new_tokens: int, temperature: float,
                      top_p: float, uniforms: torch.Tensor, stops: set[int]) -> list[list[int]]:
        """New token ids of `n` draws per prompt (row r = prompt r // n, draw r % n), each ending at its stop id."""
        from transformers import DynamicCache

        input_ids, mask = self._left_pad(prompt_ids)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                            use_cache=True, logits_to_keep=1, **{self._cache_kw: cache}).logits[:, -1]
        if n > 1:  # one prompt pass, n copies of its cache
            expand = torch.arange(len(prompt_ids), device=self.device).repeat_interleave(n)
            cache, logits, mask = _select_cache(cache, expand), logits[expand], mask[expand]
        positions = mask.sum(-1)
        live = torch.arange(len(mask), device=self.device)  # original row of each live row
        uniforms = uniforms.to(self.device)
        tokens: list[list[int]] = [[] for _ in range(len(mask))]
        stop_t = torch.tensor(sorted(stops), device=self.device)
        for step in range(max_new_tokens):
            nxt = _nucleus_pick(logits, uniforms[live, step], temperature, top_p)
            for row, tok in zip(live.tolist(), nxt.tolist()):
                tokens[row].append(tok)
            if step == max_new_tokens - 1:
                break
            going = ~torch.isin(nxt, stop_t)
            if not bool(going.any()):
                break
            if not bool(going.all()):  # finished rows leave the batch, with their KV rows
                keep = going.nonzero()[:, 0]
                cache, mask, positions, live, nxt = (_select_cache(cache, keep), mask[keep], positions[keep],
                                                     live[keep], nxt[keep])
            mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
            logits = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions[:, None],
                                use_cache=True, **{self._cache_kw: cache}).logits[:, -1]
            positions = positions + 1
        return tokens

    @torch.inference_mode()
    def generate_hf(self, prompts: Sequence[str], *, n: int = 1, instruction: str | None = None,
                    max_new_tokens: int = 48, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                    batch_size: int = 8, progress: bool = True, detailed: bool = False) -> list[list[Any]]:
        """The previous sampler: `transformers.generate` on fixed batches of `batch_size` prompts (every row runs
        until the batch's last row stops), seeded per batch. Kept as the benchmark's baseline and as the path for
        models whose KV cache `_select_cache` cannot slice. `detailed=True` returns `Generation`s."""
        texts = [self.format_prompt(_wrap(p, instruction)) for p in prompts]
        limit = max(1, self.config.max_length - max_new_tokens)
        bos = self.tokenizer.bos_token_id
        out: list[list[Any]] = []
        bar = _progress(total=len(texts), enabled=progress, desc="PM sampling")
        gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_return_sequences=n,
                                          pad_token_id=self.pad_id)
        if temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        stops = self._stop_ids()
        for start in range(0, len(texts), batch_size):
            ids = [truncate_prompt(encode_prompt(self.tokenizer, t), 0, limit, bos)[0]
                   for t in texts[start:start + batch_size]]
            input_ids, mask = self._left_pad(ids)
            width = input_ids.shape[1]
            with torch.random.fork_rng(devices=devices):  # reproducible without disturbing the caller's RNG
                torch.manual_seed(seed * 1_000_003 + start)
                generated = self.model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
            new = generated[:, width:].tolist()
            decoded = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for row in range(len(ids)):
                gens = []
                for r in range(row * n, (row + 1) * n):
                    toks = new[r]
                    end = next((t + 1 for t, tok in enumerate(toks) if tok in stops), None)
                    gens.append(Generation(self._clean(decoded[r]), end or len(toks), end is None))
                out.append(gens if detailed else [g.text for g in gens])
            bar.update(len(ids))
        bar.close()
        return out

    def _clean(self, text: str) -> str:
        return _clean_text(text, self.chat)


def _clean_text(text: str, chat: bool) -> str:
    """Strip; in the paper format also cut where a base model starts a new "Question:" (it keeps writing Q/A pairs)."""
    if not chat:
        for stop in ("\nQuestion:", "Question:"):
            cut = text.find(stop)
            if cut > 0 or (cut == 0 and stop.startswith("\n")):
                text = text[:cut]
    return text.strip()


def _wrap(prompt: str, instruction: str | None) -> str:
    if not instruction:
        return prompt
    if "{prompt}" in instruction:
        return instruction.replace("{prompt}", prompt)
    return f"{instruction}\n\n{prompt}"


_NUCLEUS_PREFIX = 256  # tokens looked at before widening to the full vocabulary


def _draw_uniforms(seed: int, prompt_index: int, draw: int, steps: int) -> torch.Tensor:
    """The uniform stream of one draw: a function of (seed, prompt index, draw) only, never of the batch."""
    key = hashlib.sha256(f"seam-sample:{seed}:{prompt_index}:{draw}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))
    return torch.rand(steps, generator=gen, dtype=torch.float64)


def _nucleus_pick(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row by inverse-CDF sampling with the row's uniform `u` from the top-p nucleus of
    softmax(logits / temperature) (HF's rule: keep a token while the mass before it is < top_p); greedy at 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    k = min(_NUCLEUS_PREFIX, probs.shape[-1]) if top_p < 1 else probs.shape[-1]
    vals, idx = probs.topk(k, dim=-1) if k < probs.shape[-1] else probs.sort(dim=-1, descending=True)
    out = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    wide = vals.sum(-1) < top_p  # nucleus larger than the prefix: these rows need the whole sorted vocabulary
    for sel, full in ((~wide, False), (wide, True)):
        if not bool(sel.any()):
            continue
        v, ix = probs[sel].sort(dim=-1, descending=True) if full else (vals[sel], idx[sel])
        before = v.cumsum(-1) - v
        v = torch.where(before < top_p, v, torch.zeros_like(v)).double()
        cdf = v.cumsum(-1)
        pick = torch.searchsorted(cdf, (u[sel] * cdf[:, -1])[:, None], right=True).clamp(max=v.shape[-1] - 1)
        out[sel] = ix.gather(1, pick)[:, 0]
    return out


def _select_cache(cache: Any, rows: torch.Tensor) -> Any:
    """A shallow copy of a filled DynamicCache whose key/value tensors hold only `rows` (repeats allowed).

    The prompt cache stays untouched (layers re-bind tensors on update, never write in place), so it can serve
    several response batches. Layer bookkeeping (e.g. a sliding window's cumulative length) is copied as is.
    """
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.numel():
            twin.keys = keys.index_select(0, rows)
            twin.values = layer.values.index_select(0, rows)
        new.layers.append(twin)
    return new


def _cache_is_sliceable(model_config: Any) -> bool:
    """`_select_cache` only knows plain (optionally sliding-window) key/value layers."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    try:
        layers = DynamicCache(config=model_config).layers
    except Exception:  # noqa: BLE001 - unknown cache layout: do not share
        return False
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair" if "scoring" in desc else "prompt")


# ----------------------------------------------------------------------------------------------------------------
# vLLM sampling (GPU)
# ----------------------------------------------------------------------------------------------------------------

def vllm_unavailable_reason() -> str | None:
    """Why `--generator-backend vllm` cannot run here (one line with the fix), or None when it can."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "--generator-backend vllm needs vLLM: pip install -e '.[vllm]' (on a CUDA machine), or use --generator-backend hf"
    if not torch.cuda.is_available():
        return "--generator-backend vllm needs a CUDA GPU and none is visible here; use --generator-backend hf on CPU"
    return None


def require_vllm() -> None:
    """Raise the one-line `UserError` of `vllm_unavailable_reason`, if any (checked before any work starts)."""
    reason = vllm_unavailable_reason()
    if reason:
        from analysis.errors import UserError

        raise UserError(reason)


class VLLMGenerator:
    """The same `generate_detailed` contract as `PolicyModel`, served by vLLM (GPU only).

    Prompts are formatted and tokenized by the PM's own tokenizer (`format_prompt` + `encode_prompt`, identical to
    the HF path) and passed as token ids, so both backends condition on the same tokens. Each prompt is one
    request with `n` draws and a seed derived from (`seed`, prompt index) — reproducible per request, independent
    of batching; `generation_config="vllm"` keeps the model's own sampling defaults out, so only the recorded
    settings (temperature, top_p, no top-k, max_new_tokens) apply. A draw is `truncated` when vLLM stopped it for
    length. vLLM's random streams differ from the HF loop's: the same seed gives other (equally distributed) texts.
    """

    def __init__(self, pm_path: str, tokenizer: Any, dtype: str = "auto", max_length: int = 1024,
                 gpu_memory_utilization: float = 0.85):
        require_vllm()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.max_length = max_length
        self.chat = has_chat_template(tokenizer)
        self.llm = LLM(model=pm_path, dtype=dtype, max_model_len=max_length, seed=0,
                       gpu_memory_utilization=gpu_memory_utilization, generation_config="vllm")

    @classmethod
    def from_ref(cls, ref: str, models_dir: Path | str | None = None, dtype: str = "auto",
                 max_length: int = 1024) -> "VLLMGenerator":
        """The generator for a PM reference (resolved like `PolicyModel`: builtin GGUFs are converted once)."""
        from transformers import AutoTokenizer

        require_vllm()
        path = resolve_model(ref, models_dir if models_dir is not None else default_models_dir())
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(str(path), tokenizer, dtype="auto" if dtype == "auto" else dtype, max_length=max_length)

    def generate_detailed(self, prompts: Sequence[str], *, n: int = 1, instruction: str | None = None,
                          max_new_tokens: int = 48, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                          batch_size: int = 0, progress: bool = True) -> list[list[Generation]]:
        """See `PolicyModel.generate_detailed`; vLLM schedules the batches itself (`batch_size` is ignored)."""
        from vllm import SamplingParams

        limit = max(1, self.max_length - max_new_tokens)
        bos = self.tokenizer.bos_token_id
        requests = [{"prompt_token_ids": truncate_prompt(
            encode_prompt(self.tokenizer, format_prompt(self.tokenizer, _wrap(p, instruction))), 0, limit, bos)[0]}
            for p in prompts]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                 max_tokens=max_new_tokens, skip_special_tokens=True,
                                 seed=int(_draw_uniforms(seed, i, 0, 1).mul(2**31).item()))
                  for i in range(len(prompts))]
        outs = self.llm.generate(requests, params, use_tqdm=progress)
        return [[Generation(_clean_text(c.text, self.chat), len(c.token_ids), c.finish_reason == "length")
                 for c in o.outputs] for o in outs]
