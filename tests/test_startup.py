"""Start-up: the page needs neither diffusers nor transformers, and the model loads in the background.

The import checks run in a fresh interpreter (this one has imported everything through tests/conftest.py).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

import app
from modules import cmd_args
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.jobs.managed_models import ManagedModels
from sdwebui.jobs.queue import JobState
from sdwebui.models.manager import ModelManager
from sdwebui.services import build_services
from tests.api_server import free_port
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("diffusers", "transformers", "open_clip", "scipy")  # seconds each to import; the page needs none

# Records who imports a heavy package first, so that a failure names the culprit.
_PROBE = """
import json, sys, traceback
HEAVY = {heavy!r}
first = {{}}

class Probe:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first:
            stack = [f"{{f.filename}}:{{f.lineno}}" for f in traceback.extract_stack()[:-1]]
            first[top] = [s for s in stack if "importlib" not in s and "<frozen" not in s][-6:]
        return None

sys.meta_path.insert(0, Probe())
{body}
# find_spec is also called by importlib.util.find_spec (a cheap "is it installed?"): keep real imports
print("IMPORTED=" + json.dumps({{k: v for k, v in first.items() if k in sys.modules}}))
"""


def heavy_imports(body: str) -> dict[str, list[str]]:
    """{package: importer stack} of the heavy packages that `body` imports, in a fresh interpreter."""
    code = _PROBE.format(heavy=HEAVY, body=body)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("IMPORTED="))
    return json.loads(line.removeprefix("IMPORTED="))


def test_importing_the_app_and_api_modules_imports_no_model_library():
    body = "\n".join(
        f"import {name}"
        for name in (
            "app",
            "sdwebui.services",
            "sdwebui.api.server",
            "sdwebui.api.routes",
            "sdwebui.extensions.bridge",
            "sdwebui.models.manager",
            "sdwebui.models.loader",
            "sdwebui.engine.samplers",
            "modules.devices",
            "sdwebui.engine.generate",
            "webui.layout",
        )
    )
    assert heavy_imports(body) == {}


def test_building_the_page_and_api_imports_no_model_library(tmp_path):
    """What happens before the page is served: services (the real ModelManager listing checkpoints), the
    built-in extensions, the Gradio UI and the API routes. Listing samplers and checkpoints stays cheap too."""
    body = f"""
from modules import cmd_args
from sdwebui.api.server import create_app
from sdwebui.extensions.bridge import attach_extensions
from sdwebui.engine.samplers import samplers_for_api
from sdwebui.services import build_services
from webui.layout import mount_page

services = build_services(cmd_args.parse_args(["--api", "--data-dir", {str(tmp_path)!r}]))
attach_extensions(services)
create_app(services, ui=mount_page, with_api=True)
assert "Euler a" in [s["name"] for s in samplers_for_api()]
assert services.models.checkpoint_titles(), "the embedded default model is listed"
services.jobs.shutdown()
"""
    assert heavy_imports(body) == {}


class GatedModels:
    """The real models behind a gate the test opens: loading waits until then (a slow disk, say)."""

    def __init__(self, inner: ManagedModels):
        self.inner = inner
        self.gate = threading.Event()
        self.loading = threading.Event()

    def load(self, title=None, vae=None):
        self.loading.set()
        assert self.gate.wait(120), "the test never opened the gate"
        return self.inner.load(title, vae)

    def __getattr__(self, name):  # checkpoints(), current_title(), ... as the real provider
        return getattr(self.inner, name)


def test_a_job_submitted_while_the_model_loads_waits_for_it_and_completes(tmp_path):
    args = cmd_args.parse_args(["--api", "--data-dir", str(tmp_path)])
    models = GatedModels(ManagedModels(ModelManager(checkpoint_dirs=[tmp_path / "models"])))
    services = build_services(args, models=models)
    try:
        load_job = app.submit_model_load(services)
        assert models.loading.wait(60)
        job = services.submit_generation(
            Txt2ImgRequest(prompt="a red circle", steps=2, width=None, height=None)
        )
        time.sleep(0.3)
        assert (load_job.state, job.state) == (JobState.RUNNING, JobState.QUEUED)
        models.gate.set()
        result = job.wait(300)
    finally:
        models.gate.set()
        services.jobs.shutdown()
    assert load_job.state == JobState.DONE
    assert load_job.result.info.title.startswith("shapes64")
    image = result.images[0].image
    assert image.size == (64, 64)  # the default model's native size
    assert len(set(image.getdata())) > 1  # a generated picture, not a blank


@pytest.mark.slow
def test_real_app_serves_the_page_and_a_txt2img_sent_at_once_gets_an_image(tmp_path):
    """app.py with the UI and API: txt2img sent the moment the page answers (the model is still loading
    or just loaded) returns a PNG; the log has the phase lines benchmarks/startup.py reads."""
    port = free_port()
    log_path = tmp_path / "app.log"
    command = [sys.executable, "app.py", "--api", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def page_answers() -> bool:
            assert process.poll() is None, log_path.read_text()  # the app died: show why
            try:
                return requests.get(base + "/", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_until(page_answers, "the page never answered", timeout=300, interval=0.1)
        response = requests.post(base + "/sdapi/v1/txt2img", json={"prompt": "a red circle"}, timeout=300)
        assert response.status_code == 200, response.text
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
        assert (image.format, image.size) == ("PNG", (64, 64))
    finally:
        process.terminate()
        process.wait(15)
    log = log_path.read_text()
    assert "Startup time: " in log and "import gradio: " in log and "build UI and API: " in log, log
    assert "Model ready: " in log and "import diffusers, transformers: " in log, log


def test_the_startup_log_line_is_the_one_the_benchmark_reads():
    import importlib.util

    from sdwebui.startup_timer import StartupTimer

    spec = importlib.util.spec_from_file_location("startup_bench", REPO_ROOT / "benchmarks" / "startup.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    timer = StartupTimer()
    timer.record("import torch")
    time.sleep(0.02)
    timer.record("load shapes64.safetensors [de67ba2a3c]")
    line = "2026-12-01 20:11:41,269 INFO sdwebui.services: " + timer.summary()
    log = bench.LogReader(io.StringIO(line + "\n"), time.perf_counter())
    log._thread.join(5)
    phases = bench.phases_from(log, "Startup time")
    assert list(phases) == ["import torch", "load shapes64.safetensors [de67ba2a3c]"]
    assert phases["load shapes64.safetensors [de67ba2a3c]"] >= 0.02
    assert abs(sum(phases.values()) - timer.total) < 0.02
    if sys.platform.startswith("linux"):  # the app's CPU seconds, read from /proc as for a child process
        import os

        before = time.process_time()
        cpu = bench.process_cpu(os.getpid())
        assert before - 0.1 <= cpu <= time.process_time() + 0.1


def test_the_page_blocks_come_with_their_queue_set_up_while_empty(tmp_path, monkeypatch):
    """The page's queue (no default concurrency limit: our job queue orders the work) is set up when the
    Blocks are created, where gradio's queue() is cheap, not on the built page (a whole app build again)."""
    from fastapi import FastAPI
    from gradio.routes import App

    from webui.layout import mount_ui

    built = []  # the number of blocks of each Blocks gradio builds an app for
    create_app = App.create_app
    monkeypatch.setattr(
        App,
        "create_app",
        lambda blocks, *a, **k: built.append(len(blocks.blocks)) or create_app(blocks, *a, **k),
    )
    services = build_services(cmd_args.parse_args(["--api", "--data-dir", str(tmp_path)]))
    try:
        demo = mount_ui(FastAPI(), services).state.demo  # the page as app.py mounts it
    finally:
        services.jobs.shutdown()
    page = len(demo.blocks)
    assert built.count(page) == 2, built  # when the Blocks close, and when mounted: no third build
    assert demo._queue.default_concurrency_limit is None
    assert demo._queue.blocks is demo and len(demo.blocks) > 100  # the whole page's queue
