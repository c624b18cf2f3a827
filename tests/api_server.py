"""Start the API server as a subprocess on a free loopback port, for tests over real HTTP.

`start_server(...)` runs `app.py` (the real product, with the real engine on a tiny checkpoint) or, with
`fake_engine=True`, this module as a script: the same services, routes and queue, with a stand-in engine whose
speed the test controls (for queue-order, interrupt and fuzz tests that must not depend on engine speed).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@contextlib.contextmanager
def start_server(
    data_dir: Path,
    extra_args: list[str] | None = None,
    fake_engine: bool = False,
    step_delay: float = 0.0,
    auth: tuple[str, str] | None = None,
    timeout: float = 120.0,
    torch_threads: int | None = 1,
    host: str = "127.0.0.1",
    ui: bool = False,
) -> Iterator[Server]:
    """`torch_threads` (OMP_NUM_THREADS of the server; None = torch's default): one thread by default, because
    tiny models gain nothing from intra-op threads and, on a small shared machine, OpenMP threads waiting for a
    busy core made a 2-step 64x64 job ~10x slower. `host`: another loopback address (127.0.0.2, ...) stands
    for a public listener (`--server-name`). `ui`: serve the Gradio UI beside the API."""
    port = free_port()
    flags = ["--api", "--port", str(port), "--data-dir", str(data_dir)]
    flags += [] if ui else ["--nowebui"]
    flags += [] if host == "127.0.0.1" else ["--server-name", host]
    flags += extra_args or []
    if fake_engine:
        command = [sys.executable, "-m", "tests.api_server", "--step-delay", str(step_delay), *flags]
    else:
        command = [sys.executable, str(REPO_ROOT / "app.py"), *flags]
    log_path = data_dir / f"server-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if torch_threads is not None:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
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


# --- the stand-in engine (used only with fake_engine=True) ---


def fake_services(args, step_delay: float):
    from PIL import Image

    from sdwebui.engine.context import StepInfo
    from sdwebui.engine.requests import GenerationResult
    from sdwebui.models.model import CheckpointInfo
    from sdwebui.services import build_services

    class FakeModels:
        def __init__(self, folder: Path):
            self.folder = folder
            self.loaded: str | None = None
            self.loads: list[str] = []

        def checkpoints(self) -> list[CheckpointInfo]:
            return [
                CheckpointInfo(path=p, name=p.stem, title=p.name, filename=str(p))
                for p in sorted(self.folder.glob("*.safetensors"))
            ]

        def checkpoint_titles(self) -> list[str]:
            return [c.title for c in self.checkpoints()]

        def refresh(self) -> None:
            pass

        def current_title(self) -> str | None:
            return self.loaded

        def load(self, title: str | None = None, vae: str | None = None):
            infos = self.checkpoints()
            info = next((c for c in infos if title in (c.title, c.name)), infos[0] if infos else None)
            if info is None:
                raise RuntimeError("no checkpoint")
            if self.loaded != info.title:
                self.loads.append(info.title)
            self.loaded = info.title

            class Model:
                pass

            model = Model()
            model.info = info
            model.native_resolution = 512  # the fake stands for SD 1.x checkpoints
            return model

        def unload(self) -> None:
            self.loaded = None

        def vae_names(self) -> list[str]:
            return []

    def fake_generate(model, request, ctx, settings, hooks=None) -> GenerationResult:
        result = GenerationResult(request=request)
        base_seed = request.seed if request.seed != -1 else random.randrange(2**32 - 1000)
        # styles are applied by the engine, as the real one does (the API passes the raw prompt)
        prompt = settings.styles.apply_to_prompt(request.prompt, request.styles)
        negative = settings.styles.apply_to_negative_prompt(request.negative_prompt, request.styles)
        for batch in range(request.n_iter):
            for step in range(1, request.steps + 1):
                if ctx.interrupted or ctx.skipped:
                    break
                time.sleep(step_delay)
                ctx.report(StepInfo(batch, request.n_iter, step, request.steps, latents=None))
            if ctx.skipped:
                ctx.clear_skip()
            for index in range(request.batch_size):
                seed = base_seed + batch * request.batch_size + index
                color = (seed % 256, (seed // 256) % 256, 7)
                result.images.append(Image.new("RGB", (request.width, request.height), color))
                result.seeds.append(seed)
                result.subseeds.append(seed)
                result.prompts.append(prompt)
                result.negative_prompts.append(negative)
                result.infotexts.append(
                    f"{prompt}\nSteps: {request.steps}, Sampler: {request.sampler_name}, "
                    f"Seed: {seed}, Size: {request.width}x{request.height}, Model: {model.info.name}"
                )
            if ctx.interrupted:
                result.interrupted = True
                break
        return result

    paths_dir = Path(args.data_dir) / "models" / "Stable-diffusion"
    paths_dir.mkdir(parents=True, exist_ok=True)
    return build_services(args, models=FakeModels(paths_dir), generate=fake_generate)


def main(argv: list[str]) -> int:
    from modules import cmd_args
    from sdwebui.api.server import serve

    step_delay = 0.0
    if argv[:1] == ["--step-delay"]:
        step_delay, argv = float(argv[1]), argv[2:]
    try:
        args = cmd_args.parse_args(argv)
    except cmd_args.FlagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ui = None
    if not args.nowebui:
        from webui.layout import mount_page as ui  # as app.py does
    return serve(fake_services(args, step_delay), ui)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
