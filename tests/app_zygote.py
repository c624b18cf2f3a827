"""App servers forked from a pre-imported parent ("zygote"), so a test run pays the heavy imports once.

Each test server is the real `app.py` run as `__main__` in a fresh process with its own argv, environment,
cwd and log file; only the import of the third-party packages (torch, gradio, diffusers, transformers, ...:
10-15 s of CPU per start-up) and of the internal package `sdwebui` (~1 s; PROJECT_PRELOAD) is shared. The
zygote imports those and nothing of the A1111 forwarders, the UI or extensions, runs no torch op (no thread
pool exists when it forks: it checks it has one thread), and then forks one child per request. The child
closes the zygote's pipes, points stdin at /dev/null and stdout/stderr at the server's log, and leaves the
zygote's loop to run app.py at the top level, so its exit (atexit, thread joins, status) is a normal
interpreter exit.

Modules read environment variables when imported (OpenMP reads OMP_NUM_THREADS as torch loads it,
huggingface_hub its offline flag), so a zygote serves only servers started with exactly its environment: one
zygote per distinct environment. `SDWEBUI_TESTS_NO_ZYGOTE=1` starts every server as a plain subprocess.

Run as a script, this file is the zygote: JSON requests on stdin, JSON replies on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

# what app.py imports from other packages, by the modules that pull most of them in
PRELOAD = (
    "torch",
    "numpy",
    "PIL.Image",
    "cv2",
    "scipy.stats",
    "safetensors.torch",
    "fastapi",
    "fastapi_offline",
    "uvicorn",
    "uvicorn.main",
    "gradio",
    "peft",
    "diffusers",
    "diffusers.loaders.single_file_utils",
    "transformers",
)
# names of lazily loaded package attributes, resolved (imported) in the zygote
PRELOAD_ATTRIBUTES = {
    "diffusers": ("AutoencoderKL", "UNet2DConditionModel", "AutoencoderTiny", "DDPMScheduler"),
    "transformers": ("CLIPTextModel", "CLIPTokenizer"),
}
# what app.py imports of the project's own package before it serves: `sdwebui` reads no argv, environment or
# working directory when imported and starts no thread (checked below), so a fork inherits the same modules a
# fresh import would build. Not the A1111 forwarders (`modules`), the UI (`webui`) or extensions: app.py
# imports those fresh in each server.
PROJECT_PRELOAD = (
    "sdwebui.config.flags",
    "sdwebui.startup_timer",
    "sdwebui.extensions.preload",
    "sdwebui.services",
    "sdwebui.worker_backend",
    "sdwebui.api.server",
    "sdwebui.extensions.bridge",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
READY = "zygote ready"


def enabled() -> bool:
    return os.environ.get("SDWEBUI_TESTS_NO_ZYGOTE", "") in ("", "0")


class ZygoteUnavailable(RuntimeError):
    """The zygote could not prepare (e.g. a package started threads on import in this environment)."""


class ForkedProcess:
    """The part of subprocess.Popen the tests use, for a server forked by a zygote (which reaps it)."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.request({"op": "poll", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked server {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not reaped yet: the pid is still this process's (or its zombie's)
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The test side of one zygote process (started on first use, stopped at the end of the run)."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self.lock = threading.Lock()
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        line = self.process.stdout.readline().strip()
        if line != READY:
            self.process.wait(30)
            raise ZygoteUnavailable(f"the test zygote did not start:\n{log_path.read_text()[-3000:]}")

    def request(self, message: dict) -> dict:
        with self.lock:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the test zygote exited:\n{self.log_path.read_text()}")
        return json.loads(line)

    def spawn(self, script: Path, args: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        message = {"op": "spawn", "script": str(script), "args": args, "cwd": str(cwd), "log": str(log_path)}
        return ForkedProcess(self, self.request(message | {"env": env})["pid"])

    def close(self) -> None:
        self.process.stdin.close()  # end of input: the zygote stops the servers still running and exits
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


_zygotes: dict[tuple, Zygote | None] = {}  # None: this environment's zygote could not start
_zygotes_lock = threading.Lock()
# set by pytest for each test phase, read by nothing a server imports: not part of a zygote's environment
_PER_TEST_VARIABLES = ("PYTEST_CURRENT_TEST",)


def start_app(script: Path, args: list[str], env: dict[str, str], cwd: Path, log_path: Path):
    """`python script *args` with this env and cwd, stdout and stderr to log_path (created here): a process
    forked from the zygote of this environment, or a plain subprocess when zygotes are off or it failed."""
    zygote = _zygote_for(env, cwd, log_path.parent) if enabled() else None
    if zygote is None:
        with open(log_path, "w") as log_file:
            command = [sys.executable, str(script), *args]
            return subprocess.Popen(command, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    log_path.write_text("")
    return zygote.spawn(script, args, env, cwd, log_path)


def _zygote_for(env: dict[str, str], cwd: Path, log_dir: Path) -> Zygote | None:
    base_env = {name: value for name, value in env.items() if name not in _PER_TEST_VARIABLES}
    key = (tuple(sorted(base_env.items())), str(cwd))
    with _zygotes_lock:
        if key not in _zygotes:
            if not _zygotes:
                atexit.register(_close_all)
            log_path = log_dir / f"zygote-{len(_zygotes)}-{os.getpid()}.log"
            try:
                _zygotes[key] = Zygote(base_env, cwd, log_path)
            except ZygoteUnavailable as exc:
                warnings.warn(f"app servers start as plain subprocesses: {exc}", stacklevel=3)
                _zygotes[key] = None
        return _zygotes[key]


def _close_all() -> None:
    for zygote in filter(None, _zygotes.values()):
        zygote.close()
    _zygotes.clear()


# ---- the zygote process ----


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional package this build lacks: the app goes without it as well
            continue
        for attribute in PRELOAD_ATTRIBUTES.get(name, ()):
            getattr(module, attribute)
    sys.path.insert(0, str(REPO_ROOT))  # only for these imports: a server's path is its script's (below)
    try:
        for name in PROJECT_PRELOAD:
            importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO_ROOT))
    if any(name.split(".")[0] in ("modules", "webui") for name in sys.modules):
        raise RuntimeError("the project preload imported the A1111 forwarders or the UI")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # forking a process with threads (an OpenMP pool, a watcher) would copy locks mid-use
        raise RuntimeError(f"the zygote runs {threads} threads after its imports; it must fork with one")


def _serve(requests, replies) -> dict:
    """Answer requests until one forks a child: returns that request in the child; exits at end of input."""
    children: set[int] = set()
    for line in requests:
        message = json.loads(line)
        if message["op"] == "poll":
            reply = {"returncode": _reap(message["pid"], children)}
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                return message
            children.add(pid)
            reply = {"pid": pid}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    _stop(children)
    sys.exit(0)


def _reap(pid: int, children: set[int]) -> int | None:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        return None
    children.discard(pid)
    return os.waitstatus_to_exitcode(status)


def _stop(children: set[int]) -> None:
    """The run ended with servers still up (an interrupted run): stop them as the fixtures would."""
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        for pid in list(children):
            _reap(pid, children)
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)


def _become_server(message: dict, requests, replies) -> None:
    """In the forked child: the process `python script *args` would be, up to the imports already done."""
    requests.close()
    replies.close()
    log = os.open(message["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.chdir(message["cwd"])
    os.environ.clear()
    os.environ.update(message["env"])
    if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS; so does this one
        sys.modules["numpy"].random.seed()
    script = message["script"]
    sys.argv = [script, *message["args"]]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python script` puts the script's folder first


def main() -> None:
    # the protocol's own descriptors; 0 and 1 then point where stray output cannot corrupt it
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    _preload()
    replies.write(READY + "\n")
    replies.flush()
    message = _serve(requests, replies)
    _become_server(message, requests, replies)
    import runpy

    runpy.run_path(message["script"], run_name="__main__")


if __name__ == "__main__":
    main()
