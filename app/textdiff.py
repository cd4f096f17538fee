"""Word-level diff for the mismatch browser, as plain text (no HTML).

Why plain text: responses are data and must never be rendered as HTML. The diff uses the wdiff
convention — `[-removed-]` and `{+added+}` — which reads well in a monospace block (st.code), plus a
table of the changed spans for long texts.
"""

from __future__ import annotations

import difflib

import pandas as pd


def word_diff(a: str, b: str, *, max_words: int = 5000) -> tuple[str, pd.DataFrame, float]:
    """Diff `a` -> `b` by words. Returns (wdiff text, table of changes, similarity ratio in [0, 1])."""
    aw, bw = a.split()[:max_words], b.split()[:max_words]
    sm = difflib.SequenceMatcher(None, aw, bw, autojunk=False)
    out, rows = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        left, right = " ".join(aw[i1:i2]), " ".join(bw[j1:j2])
        if op == "equal":
            out.append(left)
            continue
        if left:
            out.append(f"[-{left}-]")
        if right:
            out.append(f"{{+{right}+}}")
        rows.append({"change": op, "gold": left, "other": right, "gold position": i1})
    return " ".join(out), pd.DataFrame(rows, columns=["change", "gold", "other", "gold position"]), sm.ratio()
