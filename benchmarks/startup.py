"""Start-up time of the real app: when the page answers, when the default model has made its first image.

Each run starts ``app.py --api`` as a subprocess on a free loopback port with an empty temporary --data-dir (so
the embedded default model is the one loaded), and measures from the spawn:

  ready          the first HTTP 200 of ``GET /`` (the page)
  model loaded   the ModelManager's "Loaded ..." log line
  first image    ``POST /sdapi/v1/txt2img`` with only a prompt, sent as soon as the page answers (it waits in
                 the job queue while the model loads), answered 200 with a PNG
  first job      first image - max(ready, model loaded): the job itself once the model is there
  warm job       the same request again

and the app process's CPU time (user + system, from /proc) at ready and at the first image: on a machine that
other work shares, wall times stretch with the load, CPU seconds much less. The start-up is one Python process
whose imports hold the GIL, so its CPU seconds at the first image are about the wall time it needs at best.

Where the time goes comes from the app's own "Startup time: ..." and "Model ready: ..." log lines (phases
timed by app.py) and, separately, from importing torch / gradio / diffusers / transformers one after the
other in a fresh interpreter. Medians over ``--runs``.

``--compare-ref REV`` also runs REV (checked out in a temporary git worktree, same Python) interleaved with
this checkout, so both see the same machine load; ratios are this checkout / REV. A checkout without the
phase log lines shows "-" for its phases.

Usage: .venv/bin/python benchmarks/startup.py [--runs 3] [--compare-ref REV]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PHASE_LINE = re.compile(r"(Startup time|Model ready): [\d.]+s \((.*)\)")
PHASE = re.compile(r"([^,:][^:]*): ([\d.]+)s")
MODEL_LOADED = re.compile(r"sdwebui\.models\.manager: Loaded ")
IMPORTS = (
    ("torch", "import torch"),
    ("gradio", "import gradio"),
    (
        "diffusers (UNet, VAE, single-file converters)",
        "import diffusers; diffusers.UNet2DConditionModel; diffusers.AutoencoderKL\n"
        "from diffusers.loaders import single_file_utils",
    ),
    ("transformers (CLIP text model, tokenizer)", "from transformers import CLIPTextModel, CLIPTokenizer"),
)


@dataclass
class Run:
    """One start of the app; times in seconds since the spawn."""

    ready: float
    first_image: float
    warm_job: float
    model_loaded: float | None
    cpu_ready: float | None = None  # the app's CPU seconds when the page answered
    cpu_first_image: float | None = None  # ... when the first image came back
    phases: dict[str, float] = field(default_factory=dict)  # "Startup time" phases
    model_phases: dict[str, float] = field(default_factory=dict)  # "Model ready" phases

    @property
    def first_job(self) -> float:
        return self.first_image - max(self.ready, self.model_loaded or 0.0)


class LogReader:
    """The app's output, each line stamped with the time it was read."""

    def __init__(self, stream, start: float):
        self.lines: list[tuple[float, str]] = []
        self._stream, self._start = stream, start
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append((time.perf_counter() - self._start, line.rstrip("\n")))

    def first(self, pattern: re.Pattern) -> tuple[float, re.Match] | None:
        for stamp, line in list(self.lines):
            match = pattern.search(line)
            if match:
                return stamp, match
        return None

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 600.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def txt2img(base: str) -> None:
    status, body = http(base + "/sdapi/v1/txt2img", {"prompt": "a red circle on a blue background"})
    if status != 200:
        raise RuntimeError(f"txt2img answered {status}: {body[:500]!r}")
    image = base64.b64decode(json.loads(body)["images"][0])
    if not image.startswith(PNG_MAGIC):
        raise RuntimeError("txt2img answered 200 without a PNG")


def wait_ready(base: str, process: subprocess.Popen, log: LogReader, start: float, timeout: float) -> float:
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            time.sleep(0.5)  # let the reader catch the last lines
            raise RuntimeError(f"app exited with {process.returncode}:\n{log.tail()}")
        with contextlib.suppress(OSError):
            if http(base + "/", timeout=5)[0] == 200:
                return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"page not answering after {timeout} s:\n{log.tail()}")


@contextlib.contextmanager
def running_app(checkout: Path, python: str) -> Iterator[tuple[str, subprocess.Popen, LogReader, float]]:
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as data_dir:
        port = free_port()
        command = [python, "app.py", "--api", "--port", str(port), "--data-dir", data_dir]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        log = LogReader(process.stdout, start)
        try:
            yield f"http://127.0.0.1:{port}", process, log, start
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def phases_from(log: LogReader, title: str) -> dict[str, float]:
    for _, line in log.lines:
        match = PHASE_LINE.search(line)
        if match and match.group(1) == title:
            return {name.strip(): float(seconds) for name, seconds in PHASE.findall(match.group(2))}
    return {}


def measure(checkout: Path, python: str, timeout: float) -> Run:
    with running_app(checkout, python) as (base, process, log, start):
        ready = wait_ready(base, process, log, start, timeout)
        cpu_ready = process_cpu(process.pid)
        txt2img(base)
        first_image = time.perf_counter() - start
        cpu_first_image = process_cpu(process.pid)
        txt2img(base)
        warm_job = time.perf_counter() - start - first_image
        time.sleep(0.2)  # the "Model ready" line is logged right after the load
        loaded = log.first(MODEL_LOADED)
        return Run(
            ready=ready,
            first_image=first_image,
            warm_job=warm_job,
            model_loaded=loaded[0] if loaded else None,
            cpu_ready=cpu_ready,
            cpu_first_image=cpu_first_image,
            phases=phases_from(log, "Startup time"),
            model_phases=phases_from(log, "Model ready"),
        )


def import_times(python: str, runs: int) -> dict[str, float]:
    """Each import on top of the previous ones, in a fresh interpreter per run; medians."""
    script = "import time\n" + "".join(
        f"t = time.perf_counter()\n{code}\nprint({label!r}, time.perf_counter() - t, flush=True)\n"
        for label, code in IMPORTS
    )
    samples: dict[str, list[float]] = {label: [] for label, _ in IMPORTS}
    for _ in range(runs):
        out = subprocess.run([python, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            label, seconds = line.rsplit(" ", 1)
            samples[label.strip("'\"")].append(float(seconds))
    return {label: statistics.median(values) for label, values in samples.items() if values}


@contextlib.contextmanager
def ref_checkout(rev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="startup-ref-") as tmp:
        path = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def median_of(runs: list[Run], attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
    return statistics.median(values) if values else None


def median_phases(runs: list[Run], attr: str) -> dict[str, float]:
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(getattr(run, attr)))
    return {
        name: statistics.median([getattr(r, attr)[name] for r in runs if name in getattr(r, attr)])
        for name in names
    }


ROWS = (
    ("ready (GET / = 200)", "ready"),
    ("model loaded", "model_loaded"),
    ("first image (txt2img sent at ready)", "first_image"),
    ("first image after ready", "after_ready"),
    ("first job (once the model is loaded)", "first_job"),
    ("warm job", "warm_job"),
    ("app CPU time at ready", "cpu_ready"),
    ("app CPU time at the first image", "cpu_first_image"),
    ("app CPU time from ready to first image", "cpu_after_ready"),
)


def summary(runs: list[Run]) -> dict[str, float | None]:
    values = {
        attr: median_of(runs, attr) for _, attr in ROWS if attr not in ("after_ready", "cpu_after_ready")
    }
    values["first_job"] = statistics.median([r.first_job for r in runs])
    values["after_ready"] = statistics.median([r.first_image - r.ready for r in runs])
    cpu = [r.cpu_first_image - r.cpu_ready for r in runs if None not in (r.cpu_ready, r.cpu_first_image)]
    values["cpu_after_ready"] = statistics.median(cpu) if cpu else None
    return values


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(results: dict[str, list[Run]], imports: dict[str, float], runs: int) -> None:
    names = list(results)
    sums = {name: summary(rs) for name, rs in results.items()}
    print(f"\nStart-up of app.py --api (empty --data-dir: embedded default model), median of {runs}")
    load_now = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"(load average 1/5/15 min: {LOAD_BEFORE} before the runs, {load_now} after)")
    width = max(16, *(len(name) + 3 for name in names))
    header = f"{'':40s}" + "".join(f"{name:>{width}s}" for name in names)
    if len(names) == 2:
        header += f"{'ratio':>10s}"
    print(header)
    for label, attr in ROWS:
        line = f"{label:40s}" + "".join(f"{fmt(sums[n][attr]):>{width}s}" for n in names)
        a, b = (sums[n][attr] for n in names) if len(names) == 2 else (None, None)
        if a is not None and b:
            line += f"{a / b:>10.2f}"
        print(line)
    if len(names) == 2:
        print(f"(ratio: {names[0]} / {names[1]})")
    for name, rs in results.items():
        print(f"\nWhere the time goes in {name} (the app's phase log, medians):")
        phases, model = median_phases(rs, "phases"), median_phases(rs, "model_phases")
        if not phases and not model:
            print("  - (this revision logs no phases)")
        for title, values in (("until the server starts", phases), ("model thread (beside it)", model)):
            if values:
                print(f"  {title}: " + ", ".join(f"{k} {v:.2f} s" for k, v in values.items()))
    print("\nImports in a fresh interpreter, each on top of the previous ones (medians):")
    for label, seconds in imports.items():
        print(f"  {label:50s} {seconds:6.2f} s")
    head = sums[names[0]]
    print(
        f"\nGoals ({names[0]}): ready <= 10 s: {'yes' if head['ready'] <= 10 else 'no'}; "
        f"first image <= 3 s after ready: {'yes' if head['after_ready'] <= 3 else 'no'}"
    )


LOAD_BEFORE = " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-ref", metavar="REV", help="also run this git revision, interleaved")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the page")
    args = parser.parse_args()
    python = sys.executable
    with contextlib.ExitStack() as stack:
        checkouts = {"this checkout": ROOT}
        if args.compare_ref:
            checkouts[f"ref {args.compare_ref}"] = stack.enter_context(ref_checkout(args.compare_ref))
        results: dict[str, list[Run]] = {name: [] for name in checkouts}
        for index in range(args.runs):
            order = list(checkouts) if index % 2 == 0 else list(reversed(checkouts))
            for name in order:
                run = measure(checkouts[name], python, args.timeout)
                results[name].append(run)
                print(
                    f"run {index + 1} {name}: ready {run.ready:.2f} s, first image {run.first_image:.2f} s",
                    flush=True,
                )
        imports = import_times(python, args.runs)
    report(results, imports, args.runs)


if __name__ == "__main__":
    main()
