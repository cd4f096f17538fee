"""Start the dashboard on a free local port and wait until it answers: for the browser tests and the labeling
benchmark (which also serves an older checkout's app from its own folder)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(db: Path, *, root: Path = ROOT, env: dict | None = None, log: Path | None = None,
          timeout_s: float = 60) -> Iterator[str]:
    """`streamlit run <root>/app/main.py -- --db DB` on 127.0.0.1 (headless, no usage stats); yields its URL
    once /_stcore/health answers, stops it on exit. `env` replaces the environment (SEAM_DB is dropped so
    the --db flag wins); `root` goes first on PYTHONPATH so that checkout's own code runs."""
    port = free_port()
    env = dict(os.environ if env is None else env)
    env.pop("SEAM_DB", None)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "streamlit", "run", str(root / "app" / "main.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--", "--db", str(db)]
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start from {root}" +
                                   (":\n" + Path(log).read_text() if log else ""))
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()
