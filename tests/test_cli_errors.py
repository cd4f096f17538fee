"""Every user-caused failure of `seam` is one line on stderr (problem, value, fix) and exit code 2."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from analysis.cli import main


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    return tmp_path


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert rc == 2, f"seam {' '.join(argv)}: exit code {rc}, want 2; stderr: {err[-2000:]}"
    assert len(lines) == 1 and "Traceback" not in err, f"seam {' '.join(argv)}: want one line, got:\n{err[-2000:]}"
    for text in expected:
        assert text in lines[0], f"seam {' '.join(argv)}: error line lacks {text!r}: {lines[0]}"
    return lines[0]


def test_not_a_duckdb_file(offline, capsys):
    (offline / "notes.duckdb").write_text("just text, not a database")
    _one_line_error(capsys, ["info", "--db", "notes.duckdb"], "notes.duckdb", "not a DuckDB")
    _one_line_error(capsys, ["precompute", "ok.jsonl", "--db", "notes.duckdb"], "notes.duckdb", "not a DuckDB")


def test_missing_info_db(offline, capsys):
    _one_line_error(capsys, ["info", "--db", "nothing-here.duckdb"], "nothing-here.duckdb", "seam precompute")


def test_missing_dataset_without_extension(offline, capsys):
    _one_line_error(capsys, ["precompute", "no_such_data", "--db", "t.duckdb"], "no_such_data")
    _one_line_error(capsys, ["precompute", "./no_such_data", "--db", "t.duckdb"], "./no_such_data", "no such file")


def test_broken_compressed_files(offline, capsys):
    whole = gzip.compress(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n' * 50)
    (offline / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (offline / "plain.jsonl.gz").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    _one_line_error(capsys, ["precompute", "cut.jsonl.gz", "--db", "t.duckdb", "--quiet"], "cut.jsonl.gz", "truncated")
    _one_line_error(capsys, ["precompute", "plain.jsonl.gz", "--db", "t2.duckdb", "--quiet"], "gzip")


@pytest.mark.parametrize("flag,ref,text", [
    ("--policy", "./my-sft-ckpt", "no such folder"),
    ("--policy", "model.Q4_K_M.gguf", "no such .gguf file"),
    ("--reward", "org/not-cached-rm", "HF_HUB_OFFLINE"),
    ("--reward", "ok.jsonl", "not .gguf"),
    ("--policy", "builtin:nope", "unknown built-in"),
])
def test_bad_model_reference_fails_before_any_work(offline, capsys, flag, ref, text):
    _one_line_error(capsys, ["precompute", "ok.jsonl", flag, ref, "--db", "t.duckdb", "--quiet"], ref, text)
    assert not (offline / "t.duckdb").exists(), "a bad model reference must be caught before the DB is written"


def test_debug_shows_the_traceback(offline):
    (offline / "notes.duckdb").write_text("text")
    with pytest.raises(ValueError, match="not a DuckDB"):
        main(["--debug", "info", "--db", "notes.duckdb"])


def test_closed_stdout_ends_quietly(tmp_path):
    """`seam info --json | head`: the reader goes away before seam writes; no BrokenPipeError, exit 0."""
    from analysis.storage import store

    with store.writer(tmp_path / "r.duckdb"):
        pass
    proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", "info", "--json", "--db", "r.duckdb"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=60)
    assert rc == 0 and "BrokenPipe" not in err and "Traceback" not in err, f"rc={rc}, stderr:\n{err}"


def test_vllm_backend_without_vllm_or_cuda_is_one_line(offline, capsys):
    """`--generator-backend vllm` on a machine without vLLM or CUDA stops before any work, saying what to do."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and CUDA are both present: the backend is usable here")
    _one_line_error(capsys, ["precompute", "ok.jsonl", "--policy", "builtin:smollm2-135m-instruct",
                             "--policy-samples", "1", "--generator-backend", "vllm", "--db", "x.duckdb"],
                    "--generator-backend vllm", "--generator-backend hf")
    assert not (offline / "x.duckdb").exists(), "the vLLM check must come before the DB is created"
