"""A results folder that cannot be written (a shared, read-only mount): the app must open it, keep hand
labels in the user's cache and say so. Simulated with a real read-only bind mount in a private mount
namespace (`unshare`), because tests run as root and root ignores permission bits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analysis.data import synthetic
from analysis.storage import labels as labels_mod

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from streamlit.testing.v1 import AppTest
    out = {}
    at = AppTest.from_file(sys.argv[1], default_timeout=90)
    at.run()
    out["overview_exc"] = [e.value for e in at.exception]
    out["overview_metrics"] = len(at.metric)
    out["notices"] = [i.value for i in at.sidebar.info]
    try:
        at.switch_page("views/spotcheck.py").run()
        at.text_input(key="annotator").set_value("ro").run()
        next(b for b in at.button if (b.key or "").startswith("lab_a|")).click().run()
        out["spot_exc"] = [e.value for e in at.exception]
    except Exception as exc:
        out["spot_exc"] = [repr(exc)]
    print("RESULT " + json.dumps(out))
""")


def _readonly_run(folder: Path, script: Path, env: dict) -> subprocess.CompletedProcess:
    inner = (f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && '
             f'touch "{folder}/.probe" 2>/dev/null && exit 97; exec "{sys.executable}" "{script}" "{ROOT}/app/main.py"')
    return subprocess.run(["unshare", "-rm", "sh", "-c", inner], env=env, capture_output=True, text=True,
                          timeout=300)


def test_app_on_a_read_only_results_folder(tmp_path, monkeypatch):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) for a read-only bind mount")
    shared = tmp_path / "shared"
    db = synthetic.make_synthetic_db(shared / "seam.duckdb", 40, seed=5)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update(SEAM_DB=str(db), XDG_CACHE_HOME=str(cache), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = _readonly_run(shared, script, env)
    if proc.returncode == 97 or "mount:" in proc.stderr or "unshare:" in proc.stderr:
        pytest.skip(f"no read-only bind mount here: {proc.stderr.strip()[:200]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"probe failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    out = json.loads(lines[0][len("RESULT "):])
    assert out["overview_exc"] == [], f"Overview on a read-only folder: {out['overview_exc']}"
    assert out["overview_metrics"] > 0, out
    expected = labels_mod.fallback_path(db)
    assert expected.is_relative_to(cache), expected
    assert any("read-only" in n and expected.name.replace("-", "\\-").replace(".", "\\.") in n
               for n in out["notices"]), f"no notice naming {expected}: {out['notices']}"
    assert out["spot_exc"] == [], f"Spot-check on a read-only folder: {out['spot_exc']}"
    assert len(labels_mod.LabelStore(expected).all()) == 1, "the label did not land in the fallback file"
    assert not (shared / "seam.labels.sqlite").exists()
