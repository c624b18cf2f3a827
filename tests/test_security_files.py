"""No file is reachable by name (issue 13, finding 6): the extension index loader, driven in-process like
the Extensions tab drives it, reads only small regular files within a time limit, and nothing at all on a
public listener.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from modules.extensions import ExtensionError, ExtensionManager
from tests.sample_extensions.harness import make_app, reset_scripts
from webui.extensions_tab import ExtensionsActions

# --- helpers -----------------------------------------------------------------------------------------------


def fifo_has_reader(path: Path) -> bool:
    """Did anything open this FIFO for reading (and keep it open)? A non-blocking writer open tells."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO, exc
        return False
    os.close(fd)
    return True


def within(seconds: float, fn, *args):
    """fn(*args) in a thread; fails the test (instead of hanging it) when it has not returned in time."""
    outcome: dict = {}

    def call():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"{getattr(fn, '__name__', fn)} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- 6. the extension index loader -------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /index: a small valid index; /endless: zeros without end; /drip: one byte per 0.2 s."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.path == "/index":
                self.wfile.write(
                    json.dumps({"extensions": [{"name": "X", "url": "https://e.invalid/x"}]}).encode()
                )
            while self.path in ("/endless", "/drip"):
                self.wfile.write(b"0" * (65536 if self.path == "/endless" else 1))
                self.wfile.flush()
                if self.path == "/drip":
                    time.sleep(0.2)
        except OSError:
            pass  # the client hung up (what a bounded reader does)

    def log_message(self, *args):
        pass


@pytest.fixture
def index_server():
    _Handler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_index_on_a_public_listener_is_refused_before_anything_is_read(
    tmp_path, tiny_sd1_model, index_server
):
    services, _ = make_app(
        tmp_path / "data", tiny_sd1_model, "--server-name", "127.0.0.2", "--gradio-auth", "u:p"
    )
    try:
        valid = tmp_path / "index.json"
        valid.write_text(json.dumps({"extensions": [{"name": "X", "url": "https://e.invalid/x"}]}))
        os.mkfifo(tmp_path / "pipe.json")
        sources = [
            str(valid),
            str(tmp_path / "missing.json"),
            str(tmp_path / "pipe.json"),
            index_server + "/index",
        ]
        messages = set()
        for source in sources:
            with pytest.raises(ExtensionError, match="refused") as caught:
                within(30, ExtensionsActions(services).available, source)
            messages.add(str(caught.value).replace(source, "SOURCE"))
        assert len(messages) == 1, messages  # the same answer for every source: no existence or port oracle
        assert _Handler.hits == [] and not fifo_has_reader(tmp_path / "pipe.json")
        assert services.options.get("extensions_index_url", "") == ""
    finally:
        services.jobs.shutdown()
        reset_scripts()


def test_index_files_must_be_small_regular_files(tmp_path):
    manager = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin")
    os.mkfifo(tmp_path / "pipe.json")
    with open(tmp_path / "huge.json", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    for source, reason in (
        ("/dev/zero", "not a regular file"),
        (str(tmp_path / "pipe.json"), "not a regular file"),
        ((tmp_path / "pipe.json").as_uri(), "not a regular file"),
        (str(tmp_path / "huge.json"), "larger than"),
    ):
        with pytest.raises(ExtensionError, match=reason):
            within(30, manager.load_index, source)
    assert not fifo_has_reader(tmp_path / "pipe.json")


def test_index_urls_are_bounded_in_size_and_time(tmp_path, index_server):
    manager = ExtensionManager(tmp_path / "extensions", tmp_path / "builtin", index_timeout_s=1.0)
    assert [e["name"] for e in manager.load_index(index_server + "/index")] == ["X"]
    with pytest.raises(ExtensionError, match="larger than"):
        within(30, manager.load_index, index_server + "/endless")
    with pytest.raises(ExtensionError, match="within 1 s"):  # the deadline, not a socket timeout, ended it
        within(30, manager.load_index, index_server + "/drip")
