"""Check a command's inputs before anything slow happens (ingest, model downloads, model loading).

A typo in the third `--reward` should cost a second, not the ten minutes of scoring that come before the
RM is loaded. Each check raises `UserError` with the offending value and the fix; none loads a model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from analysis.errors import UserError, first_line
from analysis.models.resolve import BUILTIN_PREFIX, BUILTINS

# A Hugging Face repo id: "name" or "org/name" (letters, digits, - _ .), no leading dot or slash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_DUCKDB_MAGIC = b"DUCK"   # bytes 8..12 of every DuckDB database file


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_db(db: Path | str, *, must_exist: bool = False) -> None:
    """`db` is a DuckDB file (or does not exist yet and can be created)."""
    path = Path(db).expanduser()
    if path.is_dir():
        raise UserError(f"--db {db}: is a folder; pass a file such as {Path(db) / 'seam.duckdb'}")
    if not path.exists():
        if must_exist:
            raise UserError(f"--db {db}: no such file; run `seam precompute` or `seam demo` first, "
                            "or point --db at an existing results file")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--db {db}: {parent} is a file, not a folder; choose another --db path")
        return
    with path.open("rb") as fh:
        head = fh.read(12)
    if path.stat().st_size and head[8:12] != _DUCKDB_MAGIC:
        raise UserError(f"--db {db}: not a DuckDB database file; point --db at a results file written by "
                        "`seam` (or at a new path to create one)")


def check_dataset(ref: str) -> None:
    """`ref` is a builtin, an existing non-empty file or folder, or something shaped like a hub dataset id."""
    if ref.startswith("builtin:"):
        if ref != "builtin:chatterbot":
            raise UserError(f"unknown builtin dataset {ref!r}; available: builtin:chatterbot")
        return
    path = Path(ref).expanduser()
    if path.is_file():
        if path.stat().st_size == 0:
            raise UserError(f"dataset file {ref} is empty; pass a file with preference rows")
        return
    if path.is_dir():
        return
    if ref.startswith((".", "/", "~")) or path.suffix or not _HUB_ID.match(ref):
        raise UserError(f"dataset {ref!r}: no such file or folder (and not a Hugging Face dataset id); "
                        "check the path")


def check_model(ref: str, role: str, shown: str | None = None) -> None:
    """`ref` resolves to a model without loading it: builtin, checkpoint folder, .gguf file, or hub id.
    `shown`: the reference as the user typed it (messages name that, not the absolute form)."""
    flag = f"--{role}"
    name = shown or ref
    if ref.startswith(BUILTIN_PREFIX):
        if ref[len(BUILTIN_PREFIX):] not in BUILTINS:
            raise UserError(f"{flag} {name}: unknown built-in model; choose one of "
                            + ", ".join(BUILTIN_PREFIX + k for k in BUILTINS))
        return
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{flag} {name}: folder has no config.json, so it is not a transformers checkpoint; "
                            "pass the folder that holds config.json and the weights")
        return
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{flag} {name}: a file that is not .gguf; pass a checkpoint folder, a .gguf file "
                            "or a hub id")
        return
    if path.suffix.lower() == ".gguf":
        raise UserError(f"{flag} {name}: no such .gguf file; check the path")
    if ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
        raise UserError(f"{flag} {name}: no such folder, and not a hub id of the form org/name; check the path")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return
    if _offline():
        raise UserError(f"{flag} {name}: no such folder, and not in the local Hugging Face cache while "
                        "HF_HUB_OFFLINE is set; download it first or pass a local checkpoint folder")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(ref, timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means the model cannot be loaded either
        raise UserError(f"{flag} {name}: no such local folder, not in the Hugging Face cache, and the hub "
                        f"lookup failed ({first_line(exc)}); check the reference or your network") from exc


def check_models(policies: Iterable[str] = (), rewards: Iterable[str] = (),
                 given: dict[str, str] | None = None) -> None:
    given = given or {}
    for ref in policies:
        check_model(ref, "policy", given.get(ref))
    for ref in rewards:
        check_model(ref, "reward", given.get(ref))


def check_precompute(cfg) -> None:
    """Everything `seam precompute` will need, checked before the first row is read."""
    check_db(cfg.db)
    check_dataset(cfg.dataset)
    check_models(cfg.policies, cfg.rewards, cfg.given_refs)
    if cfg.generator:
        check_model(cfg.generator, "generator", cfg.given_refs.get(cfg.generator))
    if cfg.ray:
        check_ray(cfg.ray)


def check_ray(address: str) -> None:
    """`--ray` names a usable address and Ray is installed (connecting happens at the first model stage)."""
    import importlib.util

    from analysis.pipeline.distributed import parse_address
    try:
        parse_address(address)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--ray {address}: Ray is not installed; pip install -e '.[ray]' "
                        "(on the driver and every worker node), or drop --ray")
