"""Shared Playwright fixtures for the browser tests: a real server subprocess, Chromium, screenshots.

The server is the real UI over the real job queue and engine with a tiny random SD1 model held in memory
(`python tests/browser.py --data-dir D --port P`). Browser tests skip when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server did not answer {url} in {timeout} s:\n{log_path.read_text()[-4000:]}")


class ServerHandle:
    def __init__(self, url: str, data_dir: Path, process: subprocess.Popen):
        self.url = url
        self.data_dir = data_dir
        self.process = process


def start_server(data_dir: Path) -> ServerHandle:
    port = free_port()
    log_path = data_dir / "server.log"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--data-dir", str(data_dir), "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", process, SERVER_START_TIMEOUT, log_path)
    except Exception:
        process.kill()
        raise
    return ServerHandle(url, data_dir, process)


def stop_server(handle: ServerHandle) -> None:
    handle.process.terminate()
    try:
        handle.process.wait(10)
    except subprocess.TimeoutExpired:
        handle.process.kill()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory) -> Iterator[ServerHandle]:
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    handle = start_server(tmp_path_factory.mktemp("ui-data"))
    yield handle
    stop_server(handle)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(ui_server.url + "/")
    page.wait_for_selector("#txt2img_prompt textarea")
    yield page
    context.close()


class Shots:
    """Numbered screenshots under test-artifacts/<test name>/."""

    def __init__(self, name: str):
        self.folder = ARTIFACTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shot(request) -> Shots:
    return Shots(request.node.name)


# --- the server subprocess ---


class TinyModels:
    """ModelProvider with one in-memory tiny SD1 model (no files, no downloads)."""

    title = "tiny-sd1.safetensors"

    def __init__(self):
        from tests.tiny_models import tiny_loaded_model

        self._model = tiny_loaded_model("sd1")

    def checkpoints(self):
        return [self._model.info]

    def checkpoint_titles(self):
        return [self.title]

    def refresh(self):
        return None

    def current_title(self):
        return self.title

    def load(self, title=None):
        if title not in (None, "", self.title, self._model.info.name):
            raise ValueError(f"unknown checkpoint {title!r}")
        return self._model

    def unload(self):
        return None

    def vae_names(self):
        return []


def recording_generate(requests_dir: Path):
    """The real engine, plus a record of each request's init image and mask for the tests to inspect."""
    from modules.engine.generate import generate

    def run(model, request, ctx, settings, hooks=None):
        requests_dir.mkdir(parents=True, exist_ok=True)
        for name in ("mask.png", "init.png"):
            (requests_dir / name).unlink(missing_ok=True)
        if getattr(request, "mask", None) is not None:
            request.mask.save(requests_dir / "mask.png")
        if getattr(request, "init_images", None):
            request.init_images[0].save(requests_dir / "init.png")
        return generate(model, request, ctx, settings, hooks)

    return run


def serve(argv: list[str]) -> None:
    import uvicorn

    from modules import cmd_args
    from modules.api.server import create_app
    from modules.services import build_services

    args = cmd_args.parse_args(argv)
    requests_dir = Path(args.data_dir) / "last-request"
    services = build_services(args, models=TinyModels(), generate=recording_generate(requests_dir))
    services.options.set("sd_model_checkpoint", TinyModels.title)
    app = create_app(services, with_ui=True, with_api=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    serve(sys.argv[1:])
