"""The parts and pages behind `seam precompute --ray` (fast: a real DuckDB file, no model, no Ray)."""

import pyarrow as pa
import pytest

from analysis.errors import UserError
from analysis.pipeline import distributed, preflight
from analysis.pipeline.scoring import ScorerSpec
from analysis.storage import store


def _db(tmp_path, n_samples=7, per_sample=3):
    db = tmp_path / "seam.duckdb"
    samples = [{"sample_id": f"s{i:02d}", "dataset": "d", "source_row": i, "source": "t", "prompt": f"p{i}",
                "gold": f"g{i}", "rejected": None, "meta": {}} for i in range(n_samples)]
    responses = [(f"r{i:02d}{j}", f"s{i:02d}", "adv", j, f"t{i}{j}", {}) for i in range(n_samples)
                 for j in range(per_sample)]
    with store.writer(db) as con:
        store.insert(con, "samples", samples)
        store.insert(con, "responses", responses)
    return db


def _ids(pages):
    return [t.column("response_id").to_pylist() for t in pages]


def test_pages_are_fixed_runs_of_samples_and_a_resume_cuts_the_same_pages(tmp_path):
    db = _db(tmp_path)
    pages = list(distributed._pages(db, "rm", "RM", "d", 3))
    assert [t.column_names for t in pages] == [["response_id", "prompt", "text"]] * 3
    assert _ids(pages) == [[f"r{i:02d}{j}" for i in range(lo, min(lo + 3, 7)) for j in range(3)]
                           for lo in (0, 3, 6)], f"pages: {_ids(pages)}"
    assert pages[0].column("prompt").to_pylist()[:3] == ["p0"] * 3
    # the first page scored (and one response of the third): a rerun sends exactly the other pages, whole,
    # except rows already scored
    done = pages[0].column("response_id").to_pylist() + ["r060"]
    with store.writer(db) as con:
        store.insert(con, "rm_scores", [(r, "RM", 1.0) for r in done])
    again = _ids(distributed._pages(db, "rm", "RM", "d", 3))
    assert again == [_ids(pages)[1], ["r061", "r062"]], f"resumed pages: {again}"
    assert distributed._count_pending(db, "rm", "RM", "d") == (21 - 10, 7)
    # another model has its own work list
    assert _ids(distributed._pages(db, "rm", "RM2", "d", 3)) == _ids(pages)


def test_parts_are_named_by_content_and_load_idempotently(tmp_path):
    db = _db(tmp_path, n_samples=2, per_sample=2)
    spec = ScorerSpec(kind="rm", ref="RM", models_dir=str(tmp_path))
    folder = distributed.parts_dir(db, spec)
    assert folder.parent == tmp_path / "seam.duckdb.parts" / "rm_scores", folder
    part = pa.table({"response_id": ["r011", "r000", "orphan"], "reward": ["RM"] * 3, "score": [0.5, -1.0, 3.0]})
    a = distributed.write_part(folder, part)
    b = distributed.write_part(folder, part.take([2, 1, 0]))   # same rows in another order: same file
    assert a == b and sorted(p.name for p in folder.iterdir()) == [a.name], list(folder.iterdir())
    for _ in range(2):  # loading twice adds nothing the second time
        assert store.load_parts(db, "rm_scores", [a]) == 3
        con = store.connect(db)
        got = con.execute("SELECT response_id, score FROM rm_scores ORDER BY 1").fetchall()
        con.close()
        # the orphan (a response this DB does not hold) is not loaded
        assert got == [("r000", -1.0), ("r011", 0.5)], got
    distributed._remove_parts(folder)
    assert not (tmp_path / "seam.duckdb.parts").exists(), "empty parts folders should be removed"


@pytest.mark.parametrize("text,want", [("local", ("local", None)), ("local:2", ("local", 2)),
                                       ("auto", ("auto", None)), ("ray://head:10001", ("ray://head:10001", None))])
def test_ray_addresses(text, want):
    assert distributed.parse_address(text) == want


@pytest.mark.parametrize("bad", ["local:0", "local:x", " "])
def test_bad_ray_address_is_one_line(bad):
    with pytest.raises(UserError, match="--ray"):
        preflight.check_ray(bad)
