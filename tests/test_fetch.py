"""`facestream fetch-models` against a local HTTP server serving real model files.

The server (http.server on 127.0.0.1, in a thread) serves the bundled default model's two files
and misbehaves on request: a body cut short of its Content-Length, a 404, an HTML page, and a
server that accepts the connection but never answers.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from facestream.engines.fetch import FetchError, fetch_models
from facestream.engines.model_files import BUNDLED_DIR, PARAMS_NAME, STATE_NAME, ModelFileError, load_model
from facestream.streamer.cli import main

FILES = {"state": (BUNDLED_DIR / STATE_NAME).read_bytes(), "params": (BUNDLED_DIR / PARAMS_NAME).read_bytes()}
SILENT_MAX_S = 10.0  # the silent handler gives up by itself after this long


class _Handler(BaseHTTPRequestHandler):
    """GET /<mode>/<file>: mode ok | broken | flaky (broken on the first request only) |
    silent | html; any other path is a 404."""

    hits: Counter
    stop: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.hits[self.path] += 1
        parts = self.path.strip("/").split("/")
        mode, name = (parts + [""])[:2] if len(parts) <= 2 else ("", "")
        body = FILES.get(name)
        if mode == "silent":
            self.stop.wait(SILENT_MAX_S)
            return
        if mode == "html":
            body = b"<html><body>Please log in</body></html>"
        if body is None or mode not in ("ok", "broken", "flaky", "html"):
            self.send_error(404)
            return
        cut = mode == "broken" or (mode == "flaky" and self.hits[self.path] == 1)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """(base URL, per-path hit counter) of a fresh local server."""
    handler = type("Handler", (_Handler,), {"hits": Counter(), "stop": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.hits
    handler.stop.set()
    httpd.shutdown()
    httpd.server_close()


def cli(*args: str, home: Path | None = None):
    env = {"HOME": str(home)} if home is not None else None
    return CliRunner().invoke(main, ["fetch-models", *args], env=env)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("facestream: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_fetch_into_facemap_folder(server, tmp_path):
    base, hits = server
    result = cli("--url-state", f"{base}/ok/state", "--url-params", f"{base}/ok/params", home=tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / ".facemap" / "models"
    assert sorted(p.name for p in folder.iterdir()) == sorted([STATE_NAME, PARAMS_NAME])
    assert (folder / STATE_NAME).read_bytes() == FILES["state"]
    assert (folder / PARAMS_NAME).read_bytes() == FILES["params"]
    assert load_model(folder).sha256 == load_model().sha256
    assert hits == {"/ok/state": 1, "/ok/params": 1}


def test_broken_connection_is_retried(server, tmp_path):
    base, hits = server
    model = fetch_models(tmp_path, f"{base}/flaky/state", f"{base}/flaky/params", retries=2, backoff=0.01, progress=False)
    assert model.state_path == (tmp_path / STATE_NAME).resolve()
    assert hits == {"/flaky/state": 2, "/flaky/params": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_NAME, PARAMS_NAME])


def test_connection_that_keeps_breaking_fails_cleanly(server, tmp_path):
    base, hits = server
    result = cli("--dest", str(tmp_path), "--url-state", f"{base}/broken/state", "--url-params",
                 f"{base}/ok/params", "--retries", "1")
    assert result.exit_code == 1
    line = error_line(result)
    assert f"{base}/broken/state" in line and "after 2 attempt(s)" in line
    assert f"closed after {len(FILES['state']) // 2} of {len(FILES['state'])} bytes" in line
    assert hits["/broken/state"] == 2
    assert list(tmp_path.iterdir()) == []  # no partial file, no staging folder


def test_existing_model_survives_a_failed_fetch(server, tmp_path):
    base, _ = server
    for name in (STATE_NAME, PARAMS_NAME):
        (tmp_path / name).write_bytes((BUNDLED_DIR / name).read_bytes())
    with pytest.raises(FetchError):
        fetch_models(tmp_path, f"{base}/ok/state", f"{base}/broken/params", retries=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_NAME, PARAMS_NAME])
    assert load_model(tmp_path).sha256 == load_model().sha256


def test_404_is_not_retried(server, tmp_path):
    base, hits = server
    result = cli("--dest", str(tmp_path), "--url-state", f"{base}/ok/nothing", "--url-params", f"{base}/ok/params")
    assert result.exit_code == 1
    assert error_line(result).endswith(f"{base}/ok/nothing: HTTP 404 Not Found")
    assert hits["/ok/nothing"] == 1
    assert list(tmp_path.iterdir()) == []


def test_silent_server_times_out(server, tmp_path):
    base, hits = server
    t0 = time.monotonic()
    result = cli("--dest", str(tmp_path), "--url-state", f"{base}/silent/state", "--url-params",
                 f"{base}/ok/params", "--timeout", "0.5", "--retries", "0")
    elapsed = time.monotonic() - t0
    assert result.exit_code == 1
    assert "no answer within the 0.5 s timeout" in error_line(result)
    assert elapsed < 3.0
    assert list(tmp_path.iterdir()) == []


def test_a_page_that_is_not_a_model_is_refused(server, tmp_path):
    base, _ = server
    with pytest.raises(ModelFileError, match=f"not a Facemap model: {base}/html/state: not a plain torch tensor file"):
        fetch_models(tmp_path, f"{base}/html/state", f"{base}/ok/params", progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- --model facemap: fetched on first use


def facemap_env(monkeypatch, home: Path, base: str, mode: str = "ok") -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FACESTREAM_FACEMAP_STATE_URL", f"{base}/{mode}/state")
    monkeypatch.setenv("FACESTREAM_FACEMAP_PARAMS_URL", f"{base}/ok/params")


def test_model_facemap_is_fetched_once_then_loaded(server, tmp_path, monkeypatch, capfd):
    base, hits = server
    facemap_env(monkeypatch, tmp_path, base)
    folder = tmp_path / ".facemap" / "models"
    model = load_model("facemap")
    assert model.state_path == (folder / STATE_NAME).resolve()
    assert model.params_path == (folder / PARAMS_NAME).resolve()
    assert (folder / STATE_NAME).read_bytes() == FILES["state"]
    assert hits == {"/ok/state": 1, "/ok/params": 1}
    assert "downloading it there (once)" in capfd.readouterr().err
    assert load_model("facemap").sha256 == model.sha256  # present now: no second download
    assert hits == {"/ok/state": 1, "/ok/params": 1}
    # a missing params file alone is fetched again
    (folder / PARAMS_NAME).unlink()
    load_model("facemap")
    assert hits == {"/ok/state": 2, "/ok/params": 2}


def test_model_facemap_download_failure_is_one_line(server, tmp_path, monkeypatch):
    base, hits = server
    facemap_env(monkeypatch, tmp_path, base, mode="missing")
    with pytest.raises(ModelFileError) as info:
        load_model("facemap")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--model facemap: Facemap's base model is not in ")
    assert f"{base}/missing/state: HTTP 404 Not Found" in message
    assert [p.name for p in (tmp_path / ".facemap" / "models").iterdir()] == []


def test_eval_with_model_facemap(server, tmp_path):
    """`facestream eval --model facemap` in a fresh home: fetched, then evaluated."""
    import json

    base, hits = server
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "FACESTREAM_FACEMAP_STATE_URL": f"{base}/ok/state", "FACESTREAM_FACEMAP_PARAMS_URL": f"{base}/ok/params"}
    result = CliRunner().invoke(main, ["eval", "--model", "facemap", "--frames", "2", "--engine", "onnx", "--threads", "1",
                                       "--quiet", "--json"], env=env)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["model_path"] == str((tmp_path / ".facemap" / "models" / STATE_NAME).resolve())
    assert out["frames"] == 2
    assert hits == {"/ok/state": 1, "/ok/params": 1}
    env["FACESTREAM_FACEMAP_STATE_URL"] = f"{base}/missing/state"  # not asked again: the files are there
    again = CliRunner().invoke(main, ["eval", "--model", "facemap", "--frames", "1", "--engine", "onnx", "--threads", "1",
                                      "--quiet", "--json"], env=env)
    assert again.exit_code == 0, again.output
    assert hits == {"/ok/state": 1, "/ok/params": 1}
