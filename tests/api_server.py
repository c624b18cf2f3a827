"""Start the API server as a subprocess on a free loopback port, for tests over real HTTP.

The process is forked from a zygote that has imported the heavy packages once per run (tests/app_zygote.py):
app.py itself runs fresh in it; `SDWEBUI_TESTS_NO_ZYGOTE=1` starts plain subprocesses instead.

`start_server(...)` runs `app.py`: the real product, with the real engine (planning, styles, extensions,
saving) on tiny checkpoints written by `write_tiny_checkpoints` (real single files with random tiny weights).
There is no stand-in engine: one (`fake_generate`) once skipped planning and hid styles applied twice. Tests
that need a long job ask for many steps (or a larger image) and interrupt it; tests that run in process use
the same real services (`sdwebui.services.build_services`), with `CHEAP_LIMITS` where a fuzzer picks sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from tests import app_zygote

REPO_ROOT = Path(__file__).resolve().parent.parent

# settings (config.json) under which every job the API accepts is cheap on the tiny models; anything bigger is
# a 422 naming the field (for fuzzers, which pick steps and sizes at random)
CHEAP_LIMITS = {
    "limit_images": 2,
    "limit_steps": 3,
    "limit_image_pixels": 128 * 128,
    "limit_job_pixels": 2 * 128 * 128,
}


def write_tiny_checkpoints(
    data_dir: Path, names: tuple[str, ...] = ("alpha",), native_resolution: int | None = None
) -> list[Path]:
    """Real single-file SD1 checkpoints with tiny random weights (one seed per name) in the data dir's
    models/Stable-diffusion: the app lists, hashes and loads them as a user's files. `native_resolution`:
    the size the sidecar declares (the tiny models' 64 px by default), the size of a job that gives none."""
    folder = Path(data_dir) / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_tiny_checkpoint_file(folder / f"{name}.safetensors", "sd1", seed, native_resolution)
        for seed, name in enumerate(names)
    ]


_written_checkpoints: dict[tuple, Path] = {}  # (family, seed, native size) -> its file, written once per run


def write_tiny_checkpoint_file(
    path: Path, family: str = "sd1", seed: int = 0, native_resolution: int | None = None
) -> Path:
    """A tiny random single-file checkpoint at `path` with its .json sidecar. The weights depend only on
    (family, seed), so each is built and saved once per run into a private folder and copied from there:
    the same bytes as a fresh write (the same hash), without rebuilding the model for every server."""
    import atexit
    import shutil
    import tempfile

    from tests import tiny_models

    key = (family, seed, native_resolution)
    if key not in _written_checkpoints:
        if not _written_checkpoints:
            folder = Path(tempfile.mkdtemp(prefix="tiny-checkpoints-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = next(iter(_written_checkpoints.values())).parent
        model = tiny_models.tiny_loaded_model(family, seed=seed)
        if native_resolution is not None:
            model.native_resolution = native_resolution
        stem = "-".join(str(part) for part in key)
        _written_checkpoints[key] = tiny_models.write_single_file(model, folder / f"{stem}.safetensors")
    source = _written_checkpoints[key]
    shutil.copyfile(source, path)
    shutil.copyfile(source.with_suffix(".json"), path.with_suffix(".json"))
    return path


def write_settings(data_dir: Path, values: dict) -> None:
    """Settings the server starts with (its config.json)."""
    (Path(data_dir) / "config.json").write_text(json.dumps(values))


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path
    data_dir: Path

    @property
    def api(self) -> str:
        return self.url + "/sdapi/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class _SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    """A session whose connections come from another loopback address (127.0.0.9, ...): the server sees a
    different client, as per-address limits (login back-off) need."""
    session = requests.Session()
    session.mount("http://", _SourceAddressAdapter(source))
    return session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(torch_threads: int | None = 1) -> dict[str, str]:
    """The environment of a test server (the same for every server, so one zygote serves them all)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    if torch_threads is not None:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    return env


@contextlib.contextmanager
def start_server(
    data_dir: Path,
    extra_args: list[str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 240.0,
    torch_threads: int | None = 1,
    host: str = "127.0.0.1",
    ui: bool = False,
) -> Iterator[Server]:
    """`torch_threads` (OMP_NUM_THREADS of the server; None = torch's default): one thread by default, because
    tiny models gain nothing from intra-op threads and, on a small shared machine, OpenMP threads waiting for a
    busy core made a 2-step 64x64 job ~10x slower. `host`: another loopback address (127.0.0.2, ...) stands
    for a public listener (`--server-name`). `ui`: serve the Gradio UI beside the API."""
    port = free_port()
    flags = ["--api", "--port", str(port), "--data-dir", str(data_dir), "--use-cpu", "all"]
    flags += [] if ui else ["--nowebui"]
    flags += [] if host == "127.0.0.1" else ["--server-name", host]
    flags += extra_args or []
    log_path = data_dir / f"server-{port}.log"
    process = app_zygote.start_app(
        REPO_ROOT / "app.py", flags, server_env(torch_threads), REPO_ROOT, log_path
    )
    server = Server(f"http://{host}:{port}", process, log_path, data_dir)
    try:
        _wait_ready(server, timeout, auth)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_ready(server: Server, timeout: float, auth: tuple[str, str] | None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url + "/openapi.json", timeout=2, auth=auth).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()}")


def in_process_app(data_dir: Path, flags: list[str]):
    """The real services (ModelManager over the data dir's checkpoints, engine, queue) and routes in this
    process, as app.py builds them, for ASGI clients (schemathesis). Without the extensions: they bind
    process-wide state (modules.shared); the subprocess servers cover them. Returns (app, services); call
    `services.jobs.shutdown()` when done."""
    from modules import cmd_args
    from sdwebui.api.server import create_app
    from sdwebui.services import build_services

    args = cmd_args.parse_args(
        ["--api", "--nowebui", "--data-dir", str(data_dir), "--use-cpu", "all", *flags]
    )
    services = build_services(args)
    return create_app(services), services
