"""Worse responses for SEAM (README "Definitions"): `adv` perturbations of the gold answer and `contrast` answers
borrowed from neighbouring prompts.

Why these two: SEAM asks whether the RM prefers some worse response y_j to the gold y*. Both variants
build y_j without any model, so they are cheap, reproducible and explainable in the UI:

* `adversarial` damages the gold answer in controlled, recorded ways (typos, dropped / swapped words,
  a changed entity or number, shuffled sentences). An RM that scores such a copy above the original is
  rewarding surface form over content. Every call is deterministic in (gold, seed) through its own
  `random.Random` (never the global one), so a resumed or sharded run regenerates the same texts.
* `contrast_neighbours` takes the gold answers of the most similar *other* prompts: fluent,
  on-topic-looking, but answering a different question. Near-duplicate answers (cosine >= threshold or
  the same normalised text) are skipped because they would not be worse at all. The search is an exact
  blockwise top-k: memory O(block^2 + n k), never an n x n matrix; time O(n^2 d) (about a minute for
  50k prompts on 2 CPU cores), which suits the sizes a SEAM study scores. For millions of prompts use
  --fraction / shards, or an ANN index.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Sequence

import numpy as np

PERTURBATION_KINDS = ("char_insert", "char_delete", "char_swap", "word_drop", "word_swap",
                      "entity_change", "number_change", "sentence_shuffle")

# --------------------------------------------------------------------------- small entity lexicon
# Entities are swapped within their class so the damaged answer stays fluent ("Paris" -> "Madrid"),
# which is what makes it a hard negative for an RM rather than obvious noise.
_ENTITY_CLASSES: dict[str, tuple[str, ...]] = {
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "country": ("France", "Germany", "Italy", "Spain", "China", "Japan", "India", "Brazil", "Canada",
                "Mexico", "Russia", "Egypt", "Kenya", "Nigeria", "Australia", "Argentina", "Sweden",
                "Norway", "Poland", "Greece", "Turkey", "Iran", "Peru", "Chile", "England", "Ireland",
                "Scotland", "Portugal", "Netherlands", "Belgium", "Switzerland", "Austria", "Korea",
                "Vietnam", "Thailand", "Indonesia", "Pakistan", "America", "United States",
                "United Kingdom", "New Zealand", "South Africa"),
    "city": ("Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Beijing", "Moscow", "Cairo",
             "Sydney", "Toronto", "Chicago", "Boston", "Seattle", "Dallas", "Houston", "Miami", "Denver",
             "Atlanta", "Vienna", "Prague", "Dublin", "Lisbon", "Athens", "Istanbul", "Mumbai", "Delhi",
             "Shanghai", "Seoul", "Bangkok", "New York", "Los Angeles", "San Francisco", "Hong Kong"),
    "language": ("English", "French", "German", "Spanish", "Italian", "Chinese", "Japanese", "Russian",
                 "Arabic", "Portuguese", "Hindi", "Python", "Java", "JavaScript", "Ruby", "Rust", "Perl"),
    "planet": ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune", "Pluto"),
    "person": ("John", "Mary", "James", "Linda", "Robert", "Susan", "Michael", "Sarah", "David", "Emma",
               "William", "Olivia", "Charles", "Sophia", "Thomas", "Alice", "George", "Maria", "Peter",
               "Anna", "Einstein", "Newton", "Darwin", "Shakespeare", "Lincoln", "Napoleon", "Edison",
               "Tesla", "Galileo", "Picasso", "Mozart", "Beethoven"),
}
_ENTITY_LOOKUP = {name: cls for cls, names in _ENTITY_CLASSES.items() for name in names}
_SURNAMES = ("Smith", "Johnson", "Brown", "Garcia", "Miller", "Davis", "Wilson", "Moore", "Taylor",
             "Clark", "Lewis", "Walker", "Young", "King", "Wright", "Hill", "Baker", "Turner")
# Capitalised words that are not entities (pronoun, interjections, common sentence starters after
# a quote or list marker).
_NOT_ENTITIES = {"I", "I'm", "I've", "I'd", "I'll", "OK", "Ok", "Okay", "Yes", "No", "A", "An", "The",
                 "It", "It's", "This", "That", "If", "In", "On", "And", "But", "Or", "So", "You", "We",
                 "He", "She", "They", "My", "Your", "Human", "Assistant", "Mr", "Mrs", "Ms", "Dr"}
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million")

_LEXICON_RE = re.compile(r"\b(?:%s)\b" % "|".join(re.escape(e) for e in sorted(_ENTITY_LOOKUP, key=len, reverse=True)))
_WORD_RE = re.compile(r"\S+")
_NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![.]?\d)|\b(?:%s)\b" % "|".join(_NUMBER_WORDS), re.IGNORECASE)
_CAP_RUN_RE = re.compile(r"\b[A-Z][a-z]+(?:['’][a-z]+)?(?:\s+[A-Z][a-z]+)*")
_SENT_SPLIT_RE = re.compile(r"((?<=[.!?])\s+|\n+)")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _rng(gold: str, seed: int | str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1f{gold}".encode("utf-8")).hexdigest()
    return random.Random(int(digest[:16], 16))


def _norm(text: str) -> str:
    return " ".join(text.split())


def _words(text: str) -> list[re.Match]:
    return list(_WORD_RE.finditer(text))


def _replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping (start, end, replacement) edits."""
    out, last = [], 0
    for s, e, rep in sorted(spans):
        out.append(text[last:s])
        out.append(rep)
        last = e
    out.append(text[last:])
    return "".join(out)


def _n_affected(n_words: int, rate: float) -> int:
    return max(1, int(round(rate * n_words)))


# --------------------------------------------------------------------------- single perturbations
# Each returns (new_text, params) or None when the kind cannot change this text.

def _char_insert(text: str, rng: random.Random, rate: float):
    words = _words(text)
    if not words:
        return None
    chosen = rng.sample(range(len(words)), min(len(words), _n_affected(len(words), rate)))
    edits = []
    for wi in chosen:
        m = words[wi]
        pos = rng.randint(m.start(), m.end())
        edits.append((pos, pos, rng.choice(_LETTERS)))
    return _replace_spans(text, edits), {"words": sorted(chosen)}


def _char_delete(text: str, rng: random.Random, rate: float):
    words = [m for m in _words(text) if sum(c.isalnum() for c in m.group()) >= 2]
    if not words:
        return None
    chosen = rng.sample(range(len(words)), min(len(words), _n_affected(len(words), rate)))
    edits = []
    for wi in chosen:
        m = words[wi]
        positions = [m.start() + i for i, c in enumerate(m.group()) if c.isalnum()]
        pos = rng.choice(positions)
        edits.append((pos, pos + 1, ""))
    return _replace_spans(text, edits), {"words": len(chosen)}


def _char_swap(text: str, rng: random.Random, rate: float):
    cands = []
    for m in _words(text):
        w = m.group()
        pairs = [i for i in range(len(w) - 1) if w[i] != w[i + 1] and w[i].isalnum() and w[i + 1].isalnum()]
        if pairs:
            cands.append((m, pairs))
    if not cands:
        return None
    chosen = rng.sample(range(len(cands)), min(len(cands), _n_affected(len(cands), rate)))
    edits = []
    for ci in chosen:
        m, pairs = cands[ci]
        i = rng.choice(pairs)
        w = m.group()
        edits.append((m.start() + i, m.start() + i + 2, w[i + 1] + w[i]))
    return _replace_spans(text, edits), {"words": len(chosen)}


def _word_drop(text: str, rng: random.Random, rate: float):
    words = _words(text)
    if len(words) < 2:
        return None
    n = min(len(words) - 1, _n_affected(len(words), rate))
    drop = sorted(rng.sample(range(len(words)), n))
    dropped = set(drop)
    keep = [i for i in range(len(words)) if i not in dropped]
    # rebuild from kept words, each preceded by the whitespace that preceded it in the original
    pieces = [text[:words[0].start()]]
    for j, wi in enumerate(keep):
        if j:
            pieces.append(text[words[wi - 1].end():words[wi].start()])
        pieces.append(words[wi].group())
    pieces.append(text[words[-1].end():])
    return "".join(pieces), {"dropped": drop}


def _word_swap(text: str, rng: random.Random, rate: float):
    words = _words(text)
    pairs = [i for i in range(len(words) - 1) if words[i].group() != words[i + 1].group()]
    if not pairs:
        return None
    n = min(len(pairs), max(1, int(round(rate * len(words) / 2))))
    rng.shuffle(pairs)
    chosen, used = [], set()
    for i in pairs:
        if i in used or i + 1 in used:
            continue
        chosen.append(i)
        used.update((i, i + 1))
        if len(chosen) == n:
            break
    edits = []
    for i in chosen:
        a, b = words[i], words[i + 1]
        edits.append((a.start(), b.end(), b.group() + text[a.end():b.start()] + a.group()))
    return _replace_spans(text, edits), {"swapped_at": sorted(chosen)}


def _entity_spans(text: str) -> list[str]:
    """Entity candidates: known lexicon entries, plus runs of capitalised words that do not start a
    sentence (or have >= 2 words, e.g. 'Charles Babbage'). A heuristic, not NER: cheap, offline, and
    good enough to produce a fluent answer about the wrong thing."""
    found: dict[str, None] = {}
    for m in _LEXICON_RE.finditer(text):
        found[m.group()] = None
    for m in _CAP_RUN_RE.finditer(text):
        span = m.group()
        toks = span.split()
        while toks and toks[0] in _NOT_ENTITIES:
            toks = toks[1:]
        if not toks:
            continue
        span = " ".join(toks)
        start = text.find(span, m.start())
        before = text[:start].rstrip()
        sentence_start = not before or before[-1] in ".!?:\n\"'“(-*#"
        if (len(toks) >= 2 or not sentence_start) and not any(t in _NOT_ENTITIES for t in toks):
            found.setdefault(span, None)
    return list(found)


def _entity_change(text: str, rng: random.Random, rate: float):
    spans = _entity_spans(text)
    if not spans:
        return None
    old = rng.choice(spans)
    cls = _ENTITY_LOOKUP.get(old)
    if cls is not None:
        pool = [e for e in _ENTITY_CLASSES[cls] if e != old and e not in spans]
    elif len(old.split()) >= 2:
        pool = [f"{f} {s}" for f in _ENTITY_CLASSES["person"][:20] for s in _SURNAMES]
        pool = [p for p in pool if p != old]
    else:
        cls = "other"
        pool = [e for c in ("person", "city", "country") for e in _ENTITY_CLASSES[c] if e != old and " " not in e]
    new = rng.choice(pool)
    out = re.sub(r"\b%s\b" % re.escape(old), new, text)
    return out, {"from": old, "to": new, "class": cls or "name"}


def _new_number(tok: str, rng: random.Random) -> str:
    low = tok.lower()
    if low in _NUMBER_WORDS:
        new = rng.choice([w for w in _NUMBER_WORDS if w != low])
        return new.capitalize() if tok[0].isupper() else new
    if "." in tok:  # decimal: scale by 0.5-1.5, keep the number of decimals
        places = len(tok.split(".")[1])
        val = float(tok)
        s = f"{val * rng.uniform(0.5, 1.5):.{places}f}"
        return s if s != tok else f"{val + 10 ** -places:.{places}f}"
    val = int(tok)
    if 1000 <= val <= 2100 and len(tok) == 4:  # looks like a year: stay plausible
        new = val + rng.choice([-1, 1]) * rng.randint(1, 30)
    elif val <= 10:
        new = rng.choice([v for v in range(0, 21) if v != val])
    else:
        new = max(0, int(round(val * rng.uniform(0.5, 1.5))))
        if new == val:
            new = val + rng.choice([-1, 1])
    s = str(new)
    if tok.startswith("0") and len(tok) > 1:
        s = s.zfill(len(tok))
    return s


def _number_change(text: str, rng: random.Random, rate: float):
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return None
    values = sorted({m.group() for m in matches})
    old = rng.choice(values)
    new = _new_number(old, rng)
    if new == old:
        return None
    edits = [(m.start(), m.end(), new) for m in matches if m.group() == old]
    return _replace_spans(text, edits), {"from": old, "to": new, "occurrences": len(edits)}


def _sentences(text: str) -> list[str]:
    return _SENT_SPLIT_RE.split(text)


def _sentence_shuffle(text: str, rng: random.Random, rate: float):
    parts = _sentences(text)
    sents, seps = parts[0::2], parts[1::2]
    idx = [i for i, s in enumerate(sents) if s.strip()]
    if len({sents[i] for i in idx}) < 2:
        return None
    for _ in range(10):
        order = idx[:]
        rng.shuffle(order)
        if [sents[i] for i in order] != [sents[i] for i in idx]:
            break
    else:
        return None
    new_sents = list(sents)
    for slot, src in zip(idx, order):
        new_sents[slot] = sents[src]
    out = [new_sents[0]]
    for sep, s in zip(seps, new_sents[1:]):
        out += [sep, s]
    return "".join(out), {"order": order}


_KIND_FNS = {"char_insert": _char_insert, "char_delete": _char_delete, "char_swap": _char_swap,
             "word_drop": _word_drop, "word_swap": _word_swap, "entity_change": _entity_change,
             "number_change": _number_change, "sentence_shuffle": _sentence_shuffle}


def applicable_kinds(gold: str, kinds: Sequence[str] = PERTURBATION_KINDS) -> list[str]:
    """Kinds that can change `gold` at all (e.g. number_change needs a number, sentence_shuffle two
    different sentences, word_* two words)."""
    out = []
    probe = random.Random(0)
    for k in kinds:
        if k not in _KIND_FNS:
            raise ValueError(f"unknown perturbation kind {k!r}; choose from {', '.join(PERTURBATION_KINDS)}")
        res = _KIND_FNS[k](gold, probe, 0.0)
        if res is not None:
            out.append(k)
    return out


def adversarial(gold: str, k: int, seed: int | str, *, kinds: Sequence[str] = PERTURBATION_KINDS,
                ops: int = 1, rate: float = 0.1) -> list[tuple[str, dict]]:
    """k distinct perturbed copies of `gold`, each != gold, as (text, provenance).

    * Deterministic in (gold, seed, kinds, ops, rate): a private RNG is seeded from a hash of
      (seed, gold); the result for k is a prefix of the result for k + 1.
    * Kinds: the applicable ones (see `applicable_kinds`) are put in a seeded order and used round
      robin, so k <= #applicable gives k different kinds; inapplicable kinds are skipped in favour of
      applicable ones. `ops` kinds are combined per copy (default 1: one clean, explainable edit).
    * `rate`: share of the words a char / word edit touches (at least one), so a long answer gets
      visibly damaged rather than a single typo the RM cannot be expected to notice.
    * Provenance: {"kinds": [...], "ops": [{"kind", ...parameters}], "seed", "rate"}.
    * Fewer than k copies (possibly none) only when the gold cannot give k distinct ones: empty or
      whitespace-only gold -> []; a one-character gold -> only insertions. A one-word gold still gets
      character edits. Callers record the shortfall (e.g. as a count in the run summary).
    """
    if k <= 0 or not gold.strip():
        return []
    if ops < 1:
        raise ValueError("ops must be >= 1")
    rng = _rng(gold, seed)
    kinds_ok = applicable_kinds(gold, kinds)
    if not kinds_ok:
        return []
    rng.shuffle(kinds_ok)
    gold_norm = _norm(gold)
    seen = {gold_norm}
    out: list[tuple[str, dict]] = []
    attempt, max_attempts = 0, 20 * k + 20
    while len(out) < k and attempt < max_attempts:
        j = attempt
        attempt += 1
        plan = [kinds_ok[(j + t) % len(kinds_ok)] for t in range(min(ops, len(kinds_ok)))]
        text, applied = gold, []
        for kind in plan:
            res = _KIND_FNS[kind](text, rng, rate)
            if res is None:
                continue
            text, params = res
            applied.append({"kind": kind, **params})
        norm = _norm(text)
        if not applied or norm in seen or not norm:
            continue
        seen.add(norm)
        out.append((text, {"kinds": [a["kind"] for a in applied], "ops": applied, "seed": seed,
                           "rate": rate}))
    return out


# --------------------------------------------------------------------------- contrast

def _text_keys(answers: Sequence[str]) -> np.ndarray:
    """int64 key per answer's normalised text (case and whitespace folded), for exact-duplicate tests."""
    keys = np.empty(len(answers), dtype=np.int64)
    for i, a in enumerate(answers):
        h = hashlib.blake2b(_norm(a).casefold().encode("utf-8"), digest_size=8).digest()
        keys[i] = int.from_bytes(h, "little", signed=True)
    return keys


def _topk_rows(sims: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best entries by (sim desc, column asc); `cols` is [b, m] (or [m], shared by all
    rows). Ties are broken by column index, so the result does not depend on how the columns were
    blocked. Returns ([b, k'] sims, [b, k'] cols) with k' = min(k, m)."""
    cols = np.broadcast_to(cols, sims.shape)
    if sims.shape[1] > k:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(sims, part, 1)
        top_c = np.take_along_axis(cols, part, 1)
        # rows whose k-th value ties with left-out entries: redo them exactly (rare: duplicate prompts)
        kth = top_s.min(axis=1)
        n_ge = (sims >= kth[:, None]).sum(axis=1)
        for r in np.nonzero((n_ge > k) & np.isfinite(kth))[0]:
            cand = np.nonzero(sims[r] >= kth[r])[0]
            order = np.lexsort((cols[r, cand], -sims[r, cand]))[:k]
            top_s[r], top_c[r] = sims[r, cand[order]], cols[r, cand[order]]
    else:
        top_s, top_c = sims, cols
    order = np.lexsort((top_c, -top_s), axis=-1)
    return np.take_along_axis(top_s, order, 1), np.take_along_axis(top_c, order, 1)


def contrast_neighbours(prompt_emb: np.ndarray, answer_emb: np.ndarray, k: int, threshold: float = 0.9,
                        answers: Sequence[str] | None = None, block: int = 2048, *,
                        prompt_threshold: float | None = None) -> list[list[tuple[int, float]]]:
    """For each sample i, up to k other samples j ranked by prompt cosine cos(p_i, p_j), skipping j whose
    answer is a near-duplicate of i's gold: cos(a_i, a_j) >= threshold, or (with `answers`) the same
    text after folding case and whitespace. Returns [(j, prompt_similarity)] per i, best first (ties:
    lower j first), so results do not depend on `block`.

    Inputs must be L2-normalised [n, d] arrays (rows of `Encoder.encode`). `prompt_threshold`
    (optional) also skips j whose prompt is a near-duplicate of x (cos >= prompt_threshold): with
    repeated questions, another copy's answer may be just as good as the gold.
    Fewer than k entries only when fewer than k valid j exist. Memory: O(block^2 + n k).
    """
    P = np.asarray(prompt_emb, dtype=np.float32)
    A = np.asarray(answer_emb, dtype=np.float32)
    if P.ndim != 2 or A.ndim != 2 or len(P) != len(A):
        raise ValueError(f"prompt_emb {P.shape} and answer_emb {A.shape} must be [n, d] with the same n")
    n = len(P)
    if answers is not None and len(answers) != n:
        raise ValueError(f"answers has {len(answers)} items, expected {n}")
    if k <= 0 or n < 2:
        return [[] for _ in range(n)]
    if block < 1:
        raise ValueError("block must be >= 1")
    keys = _text_keys(answers) if answers is not None else None
    k_eff = min(k, n - 1)
    # Selection runs on float32 block products, whose last bits depend on the block shapes; so a few
    # spare candidates are kept and the survivors re-ranked with per-pair float64 dot products. That
    # makes the ranking and the reported similarities independent of `block`.
    k_sel = min(n - 1, k_eff + 8)
    P64 = P.astype(np.float64)
    out: list[list[tuple[int, float]]] = []
    for qs in range(0, n, block):
        qe = min(n, qs + block)
        best_s = np.full((qe - qs, 0), -np.inf, dtype=np.float32)
        best_c = np.zeros((qe - qs, 0), dtype=np.int64)
        for ks in range(0, n, block):
            ke = min(n, ks + block)
            S = P[qs:qe] @ P[ks:ke].T
            bad = (A[qs:qe] @ A[ks:ke].T) >= threshold
            if keys is not None:
                bad |= keys[qs:qe, None] == keys[None, ks:ke]
            if prompt_threshold is not None:
                bad |= S >= prompt_threshold
            lo, hi = max(qs, ks), min(qe, ke)
            if lo < hi:  # never the sample itself
                r = np.arange(lo, hi)
                bad[r - qs, r - ks] = True
            S = np.where(bad, -np.inf, S).astype(np.float32, copy=False)
            s_top, c_top = _topk_rows(S, np.arange(ks, ke, dtype=np.int64), k_sel)
            best_s, best_c = _topk_rows(np.concatenate([best_s, s_top], 1),
                                        np.concatenate([best_c, c_top], 1), k_sel)
        exact = np.einsum("bd,bkd->bk", P64[qs:qe], P64[best_c]).astype(np.float32)
        exact[~np.isfinite(best_s)] = -np.inf
        if prompt_threshold is not None:
            exact[exact >= prompt_threshold] = -np.inf
        fin_s, fin_c = _topk_rows(exact, best_c, k_eff)
        for srow, crow in zip(fin_s, fin_c):
            out.append([(int(c), float(s)) for s, c in zip(srow, crow) if np.isfinite(s)])
    return out
