"""How the dashboard is served, checked on real processes: every documented way to start it listens on
127.0.0.1 only, exposing it warns, a SIGTERM to `seam app` frees the port, and SEAM_APP_PASSWORD puts
a login in front of every page."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(port: int) -> dict[str, int]:
    """{bound address: pid} of the sockets listening on `port`."""
    return {c.laddr.ip: c.pid for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def wait_listening(proc: subprocess.Popen, port: int, timeout: float = 90) -> dict[str, int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = listeners(port)
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before listening: {proc.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def stop_tree(proc: subprocess.Popen, port: int) -> None:
    """End what this test started: the process and, if it outlived it, its Streamlit child on `port`."""
    pids = {proc.pid} | set(listeners(port).values())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
    proc.wait(10)


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_streamlit_run_listens_on_loopback_from_any_directory(tmp_path):
    """The command the app's docstring gives, run from a folder that has no .streamlit/config.toml."""
    port = free_port()
    proc = start([sys.executable, "-m", "streamlit", "run", MAIN, "--server.port", str(port),
                  "--server.headless", "true", "--", "--db", str(tmp_path / "x.duckdb")], tmp_path)
    try:
        bound = wait_listening(proc, port)
        assert set(bound) == {"127.0.0.1"}, f"`streamlit run app/main.py` listens on {sorted(bound)}"
    finally:
        stop_tree(proc, port)


def test_seam_app_listens_on_loopback_and_sigterm_frees_the_port(tmp_path):
    port = free_port()
    proc = start([sys.executable, "-m", "analysis.cli", "app", "--db", str(tmp_path / "x.duckdb"),
                  "--port", str(port)], tmp_path)
    try:
        bound = wait_listening(proc, port)
        assert set(bound) == {"127.0.0.1"}, f"`seam app` listens on {sorted(bound)}"
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while listeners(port) and time.monotonic() < end:
            time.sleep(0.2)
        left = listeners(port)
        assert not left, f"10 s after SIGTERM to `seam app` (pid {proc.pid}) port {port} is still held by {left}"
        proc.wait(5)
    finally:
        stop_tree(proc, port)


def test_seam_app_on_all_interfaces_warns(tmp_path):
    port = free_port()
    proc = start([sys.executable, "-m", "analysis.cli", "app", "--db", str(tmp_path / "x.duckdb"),
                  "--host", "0.0.0.0", "--port", str(port)], tmp_path)
    try:
        bound = wait_listening(proc, port)
        assert set(bound) == {"0.0.0.0"}, bound
    finally:
        stop_tree(proc, port)
    err = proc.stderr.read()
    assert "warning: --host 0.0.0.0" in err and "SEAM_APP_PASSWORD" in err, err


def test_password_gates_every_page(tmp_path, monkeypatch):
    from analysis.data import synthetic

    db = synthetic.make_synthetic_db(tmp_path / "seam.duckdb", 40, seed=3)
    monkeypatch.setenv("SEAM_DB", str(db))
    monkeypatch.setenv("SEAM_LABELS", str(tmp_path / "labels.sqlite"))
    monkeypatch.setenv("SEAM_APP_PASSWORD", "s3cret pass")
    at = AppTest.from_file(MAIN, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.text_input] == ["password"], "no password form in front of the app"
    assert not at.metric and not at.dataframe, "data shown before login"
    at.switch_page("views/spotcheck.py").run()
    assert [t.label for t in at.text_input] == ["password"] and not at.dataframe, "a page is reachable without login"
    at.text_input(key="seam_password").set_value("wrong")
    at.button[0].click().run()
    assert any("Wrong password" in e.value for e in at.error) and not at.dataframe
    at.text_input(key="seam_password").set_value("s3cret pass")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.key == "annotator" for t in at.text_input), "after login the Spot-check page did not render"
