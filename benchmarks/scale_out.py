"""Scale-out on Ray: 32 txt2img jobs of the embedded default model (CPU) through the HTTP API, with 1 and
then 2 workers (`--workers N --use-cpu all`, one torch thread per worker), in the same run.

Reports per pool size: jobs/s (16 clients x 2 requests), the ratio 2 workers / 1 worker, the dispatch
overhead per job, the time from a job's start to its first progress event (seen over HTTP:
/internal/progress polled every 5 ms on an idle pool), and the CPU time per job of the front process, of
the workers together and of Ray's own processes (from /proc: on a shared machine the wall-clock figures
move with the load, CPU time much less). The data dir has no checkpoint, so every job runs the embedded
default model at its native 64 px.

Dispatch overhead (the mean GET /sdapi/v1/workers reports, over the 32 timed jobs) is bounded by two
timestamps taken in the front, perf_counter both: t0 when the job's worker could begin it (a dispatcher
takes it from the queue, RayPool._take; for a job sent ahead to a busy worker, the outcome of the job
before it on that worker arrives), t1 when the job's outcome has arrived and is unpickled (the stream's
last item, before any saving); from t1 - t0 it subtracts only the time the worker's own queue ran the job
(its local job's started_at -> finished_at: the engine run, model lease included). Over a busy worker the
sum is the time it did not spend running jobs. The same figure for the 5 jobs run one at a time on the idle
pool ("idle pool") is the whole cost of going remote for one job: sending it, the worker's checks and
settings, its queue's hand-offs, the progress stream while it runs, the result's way back. The front's
saving of the PNGs and the HTTP answer come after t1 (they are in the front's CPU per job, not in this
figure).
Usage: python benchmarks/scale_out.py [--steps N] [--jobs-each N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.api_server import start_server  # noqa: E402

CLIENTS = 16
PROBES = 5  # jobs timed one at a time for the first-progress latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="sampling steps per job (default 10)")
    parser.add_argument("--jobs-each", type=int, default=2, help="requests per client (16 clients)")
    options = parser.parse_args()
    body = {"prompt": "a red circle", "steps": options.steps, "sampler_name": "Euler"}
    rows = {workers: run_pool(workers, body, options.jobs_each) for workers in (1, 2)}
    print(f"{CLIENTS * options.jobs_each} jobs, default model, {options.steps} steps, CPU")
    for workers, row in rows.items():
        print(
            f"{workers} worker(s): {row['jobs_per_s']:.2f} jobs/s ({row['elapsed']:.1f} s), "
            f"dispatch overhead {row['overhead_ms']:.1f} ms/job "
            f"({row['idle_overhead_ms']:.1f} ms one job at a time on the idle pool), "
            f"first progress {row['first_progress_ms']:.0f} ms after start (median of {PROBES})"
        )
        print(
            f"  CPU per job: front {row['cpu_ms']['front']:.1f} ms, workers {row['cpu_ms']['workers']:.1f} ms, "
            f"Ray's processes {row['cpu_ms']['ray']:.1f} ms"
        )
    print(f"ratio 2 workers / 1 worker: {rows[2]['jobs_per_s'] / rows[1]['jobs_per_s']:.2f}x")


def run_pool(workers: int, body: dict, jobs_each: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sdw-bench-") as tmp:
        data_dir = Path(tmp)
        flags = ["--workers", str(workers), "--ray-temp-dir", str(data_dir / "ray")]
        with start_server(data_dir, flags, timeout=900) as server:
            wait_ready(server, workers)
            warm_up(server, body, workers)
            idle_before = overhead_totals(server)
            first_progress = [first_progress_ms(server, {**body, "seed": 100 + n}) for n in range(PROBES)]
            before = overhead_totals(server)
            groups = process_groups(server, data_dir / "ray")
            cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}

            def client(n: int) -> int:
                for k in range(jobs_each):
                    answer = requests.post(
                        server.api + "/txt2img", json={**body, "seed": 1000 + n * 10 + k}, timeout=1200
                    )
                    answer.raise_for_status()
                return jobs_each

            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                done = sum(pool.map(client, range(CLIENTS)))
            elapsed = time.perf_counter() - start
            after = overhead_totals(server)
            cpu_ms = {
                name: 1000 * (cpu_seconds(pids) - cpu_before[name]) / done for name, pids in groups.items()
            }
    jobs = after[1] - before[1]
    return {
        "jobs_per_s": done / elapsed,
        "elapsed": elapsed,
        "overhead_ms": (after[0] - before[0]) / jobs if jobs else float("nan"),
        "idle_overhead_ms": (before[0] - idle_before[0]) / max(1, before[1] - idle_before[1]),
        "first_progress_ms": statistics.median(first_progress),
        "cpu_ms": cpu_ms,
    }


def warm_up(server, body: dict, workers: int) -> None:
    """Each worker's first jobs (its first costs some 250 ms more than the next: lazy imports, the first
    pickles), sent together so that every worker gets some, then one at a time."""

    def one(seed: int) -> None:
        requests.post(server.api + "/txt2img", json={**body, "seed": seed}, timeout=600).raise_for_status()

    with ThreadPoolExecutor(workers * 2) as pool:
        list(pool.map(one, range(workers * 2)))
    for seed in range(workers * 2):
        one(50 + seed)
    done = [row["jobs_done"] for row in requests.get(server.api + "/workers", timeout=30).json()]
    if min(done) == 0:
        raise RuntimeError(f"a worker ran none of the warm-up jobs: {done}")


def process_groups(server, ray_dir: Path) -> dict[str, list[int]]:
    """The front's pid, the workers' pids, and the other processes of this run's Ray (their command line
    names its temp dir): all on this machine with a local Ray."""
    workers = [row["pid"] for row in requests.get(server.api + "/workers", timeout=30).json()]
    ray = []
    for entry in Path("/proc").iterdir():  # the front's own command line names the temp dir too
        if entry.name.isdigit() and int(entry.name) not in (*workers, server.process.pid):
            try:
                if str(ray_dir).encode() in (entry / "cmdline").read_bytes():
                    ray.append(int(entry.name))
            except OSError:
                continue
    return {"front": [server.process.pid], "workers": workers, "ray": ray}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended (a Ray helper process)
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_ready(server, workers: int) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        rows = requests.get(server.api + "/workers", timeout=30).json()
        if len(rows) == workers and all(row["ready"] for row in rows):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{workers} workers not ready")


def overhead_totals(server) -> tuple[float, int]:
    """(sum of overhead ms, jobs) over the workers."""
    rows = requests.get(server.api + "/workers", timeout=30).json()
    total = sum((row["dispatch_overhead_ms"] or 0.0) * row["jobs_done"] for row in rows)
    return total, sum(row["jobs_done"] for row in rows)


def first_progress_ms(server, body: dict) -> float:
    """Submit one job on an idle pool; ms from when it shows as running to its first step's progress."""
    task_id = requests.post(server.api + "/txt2img?async=true", json=body, timeout=60).json()["task_id"]
    started = None
    while True:
        live = requests.post(server.url + "/internal/progress", json={"id_task": task_id}, timeout=30).json()
        now = time.perf_counter()
        if live["active"] and started is None:
            started = now
        if live["active"] and (live.get("progress") or 0) > 0:
            break
        if live["completed"]:
            break  # finished between two polls: counts as the poll's resolution
        time.sleep(0.005)
    while requests.get(f"{server.api}/tasks/{task_id}", timeout=30).json()["status"] != "done":
        time.sleep(0.02)
    return 1000 * (now - (started or now))


if __name__ == "__main__":
    main()
