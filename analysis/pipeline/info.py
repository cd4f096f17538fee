"""`seam info`: render store.describe() as terminal tables (rich).

Why every string goes through `Text`: rich reads `[...]` in a plain str as markup, and dataset,
model and variant names are data — a dataset named `evil[/b]` would crash the command (MarkupError) or
restyle the output. Nothing printed here is parsed as markup.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from analysis.storage import ledger, store
from analysis.stats.metrics import wilson


def db_info(db: Path) -> dict:
    """store.describe(), with a `running` run whose process is gone shown as interrupted (the next run
    records it so in the ledger)."""
    info = store.describe(Path(db))
    for r in info["runs"]:
        pid, host, proc_start = r.pop("pid", None), r.pop("host", None), r.pop("proc_start", None)
        if ledger.is_stale(r["status"], pid, host, proc_start):
            r["status"] = "interrupted"
    return info


def _table(title: str, rows: list[dict]) -> Table:
    t = Table(title=Text(title), title_justify="left")
    if not rows:
        t.add_column("(none)")
        return t
    for c in rows[0]:
        t.add_column(Text(str(c)))
    for r in rows:
        t.add_row(*[Text(f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r.values()])
    return t


def render_info(info: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text(str(info["db"]), style="bold"))
    console.print(_table("rows per table", [{"table": k, "rows": v} for k, v in info["tables"].items()]))
    for key in ("datasets", "models", "variants", "rejects_by_reason", "runs", "seam"):
        console.print(_table(key.replace("_", " "), info[key]))
        if key == "runs" and any(r["status"] == "interrupted" for r in info["runs"]):
            console.print("interrupted = killed before it finished; rerun the same command to resume")
    acc = []
    for r in info["rm_accuracy"]:
        p = wilson(r["correct"], r["correct"] + r["wrong"])
        acc.append({"reward": r["reward"], "variant": r["variant"], "accuracy (95% Wilson)": str(p),
                    "ties": r["ties"]})
    console.print(_table("RM accuracy on (gold > worse) pairs", acc))
    if info.get("rlhf_grid"):  # seam rlhf-grid cells (rlhf_results) and their curves (rlhf_curves)
        console.print(_table("RLHF grid (seam rlhf-grid): judge win rate vs starting PM, 95% bootstrap",
                             info["rlhf_grid"]))
