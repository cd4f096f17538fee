"""`seam info`: render store.describe() as terminal tables (rich)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from analysis.storage import store
from analysis.stats.metrics import wilson


def db_info(db: Path) -> dict:
    return store.describe(Path(db))


def _table(title: str, rows: list[dict]) -> Table:
    t = Table(title=title, title_justify="left")
    if not rows:
        t.add_column("(none)")
        return t
    for c in rows[0]:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    return t


def render_info(info: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{info['db']}[/bold]")
    console.print(_table("rows per table", [{"table": k, "rows": v} for k, v in info["tables"].items()]))
    for key in ("datasets", "models", "variants", "rejects_by_reason", "runs", "seam"):
        console.print(_table(key.replace("_", " "), info[key]))
    acc = []
    for r in info["rm_accuracy"]:
        p = wilson(r["correct"], r["correct"] + r["wrong"])
        acc.append({"reward": r["reward"], "variant": r["variant"], "accuracy (95% Wilson)": str(p),
                    "ties": r["ties"]})
    console.print(_table("RM accuracy on (gold > worse) pairs", acc))
    if info.get("rlhf_grid"):  # seam rlhf-grid cells (rlhf_results) and their curves (rlhf_curves)
        console.print(_table("RLHF grid (seam rlhf-grid): judge win rate vs starting PM, 95% bootstrap",
                             info["rlhf_grid"]))
