"""The package layout the README states: one import direction, and no pointers to files a clone lacks.

Layers of `analysis`, lowest first (a module may import its own layer and the ones below, never above):
options/errors -> stats -> storage -> data -> models -> queries -> pipeline -> study -> cli.
`app` imports `analysis`; `analysis` never imports `app`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["options", "errors", "stats", "storage", "data", "models", "queries", "pipeline", "study", "cli"]
RANK = {name: (0 if name in ("options", "errors") else i) for i, name in enumerate(LAYERS)}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "analysis" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module imported anywhere in the file (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "analysis":  # `from analysis import storage`
                out += [(node.lineno, f"analysis.{a.name}") for a in node.names]
    return out


def test_every_analysis_module_belongs_to_a_layer():
    strays = [str(p.relative_to(ROOT)) for p in (ROOT / "analysis").rglob("*.py")
              if _layer(".".join(p.relative_to(ROOT).with_suffix("").parts)) not in RANK
              and p.name != "__init__.py"]
    assert not strays, f"modules outside the layers {LAYERS}: {strays}"


def test_no_module_imports_from_a_layer_above_it():
    violations = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        own = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own not in RANK:
            continue
        for line, module in _imports(path):
            if module.split(".")[0] == "app":
                violations.append(f"{path.relative_to(ROOT)}:{line} imports the app ({module})")
            target = _layer(module)
            if target in RANK and RANK[target] > RANK[own]:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {module} ({target}, above)")
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_code_does_not_point_at_a_spec_outside_the_repository():
    pattern = re.compile(r"SPEC\s*§")
    hits = [f"{p.relative_to(ROOT)}:{i}" for folder in ("analysis", "app", "benchmarks", "scripts", "notebooks")
            for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".sql", ".sh", ".ipynb")
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"references to a spec that a user's clone does not have: {hits}"
