"""Several workers on Ray behind the one queue (sdwebui.jobs.ray_pool), over real HTTP on loopback.

One server with `--workers 2` (a local Ray bound to 127.0.0.1, two CPU worker actors on tiny checkpoints)
is shared by every Ray test of the run: Ray's start-up is slow on a small machine. The fast suite runs two
jobs through it; the rest (16 clients, affinity, control across processes, kill -9) is `slow`. The
embedded default and the refusal of a non-loopback --ray-address need no Ray at all.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from sdwebui.config import flags
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.jobs import dispatch
from sdwebui.jobs.queue import Job
from tests.api_server import start_server, write_tiny_checkpoints
from tests.lora_fixtures import save_safetensors
from tests.test_lora import lora_tensors
from tests.waiting import wait_until

TINY = {"width": 64, "height": 64, "steps": 2}
LONG = {"width": 256, "height": 256, "steps": 150}  # interrupted long before it ends


# --- without Ray ---
def test_the_default_app_never_imports_ray(tmp_path):
    from sdwebui.services import build_services
    from sdwebui.worker_backend import start_pool

    write_tiny_checkpoints(tmp_path)
    args = flags.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"])
    services = build_services(args)
    try:
        assert start_pool(services) is False and services.pool is None
        job = services.submit_generation(Txt2ImgRequest(prompt="a cube", seed=4, **TINY))
        assert job.wait(300).seeds == [4] and job.worker == "stack0"
        (row,) = services.workers()
        assert (row.id, row.pid, row.jobs_done, row.current_job) == ("stack0", os.getpid(), 1, None)
        assert row.loaded_models == [str(tmp_path / "models" / "Stable-diffusion" / "alpha.safetensors")]
    finally:
        services.shutdown()
    assert "ray" not in sys.modules


@pytest.mark.parametrize("address", ["10.1.2.3:6379", "ray://192.168.0.7:10001", "example.org:6379", "auto"])
def test_a_non_loopback_ray_address_is_refused_before_any_connection(address, tmp_path):
    import app

    with pytest.raises(flags.FlagError, match="--insecure") as refused:
        flags.parse_args(["--data-dir", str(tmp_path), "--ray-address", address])
    assert "no authentication" in str(refused.value)
    assert app.main(["--data-dir", str(tmp_path), "--nowebui", "--ray-address", address]) == 2
    assert "ray" not in sys.modules  # refused at the flags: Ray was never even imported
    accepted = flags.parse_args(["--data-dir", str(tmp_path), "--ray-address", address, "--insecure"])
    assert accepted.ray_address == address  # parsed only: nothing connects in this test


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "localhost:6379", "[::1]:6379", "ray://127.0.0.5:1"])
def test_loopback_ray_addresses_need_no_insecure(address, tmp_path):
    assert flags.parse_args(["--data-dir", str(tmp_path), "--ray-address", address]).ray_address == address


class _ClusterResources:
    """Ray's `cluster_resources()` of a cluster with `gpus` GPUs (this machine has none to show)."""

    def __init__(self, gpus: int):
        self.gpus = gpus

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 16.0, **({"GPU": float(self.gpus)} if self.gpus else {})}


def test_one_worker_per_gpu_and_never_more_gpu_workers_than_gpus(tmp_path):
    from sdwebui.jobs.ray_cluster import Cluster, PoolSettings, worker_count

    def settings(*extra: str) -> PoolSettings:
        return PoolSettings.from_args(flags.parse_args(["--data-dir", str(tmp_path), *extra]))

    assert PoolSettings.from_args(flags.parse_args(["--data-dir", str(tmp_path)])) is None  # embedded
    on = lambda gpus: Cluster(_ClusterResources(gpus), started=False, temp_dir=None)  # noqa: E731
    assert worker_count(on(4), settings("--ray-address", "127.0.0.1:6379")) == (4, True)
    assert worker_count(on(4), settings("--workers", "2")) == (2, True)
    assert worker_count(on(0), settings("--workers", "2")) == (2, False)  # no GPU: CPU workers
    assert worker_count(on(4), settings("--workers", "3", "--use-cpu", "all")) == (3, False)
    with pytest.raises(RuntimeError, match="needs 5 GPUs .* has 4"):
        worker_count(on(4), settings("--workers", "5"))
    assert settings("--workers", "2", "--worker-step-timeout", "7").step_timeout == 7


def _job(seq: int, owner: str | None = None, model: str | None = None) -> Job:
    job = Job(id=f"t{seq}", kind=model or "txt2img", work=lambda ctx: None, seq=seq, owner=owner)
    return job


def test_round_robin_between_users_then_fifo():
    queued = [_job(1, "ann"), _job(2, "ann"), _job(3, "ann"), _job(4, "bob"), _job(5, "cid"), _job(6, "bob")]
    assert [j.id for j in dispatch.fair_order(queued, [])] == ["t1", "t4", "t5", "t2", "t6", "t3"]
    # ann already has a job running: bob and cid go first
    running = [_job(0, "ann")]
    assert [j.id for j in dispatch.fair_order(queued, running)][:3] == ["t4", "t5", "t1"]
    anonymous = [_job(n) for n in (3, 1, 2)]
    assert [j.id for j in dispatch.fair_order(anonymous, [])] == ["t1", "t2", "t3"]


def _wants(job: Job) -> dispatch.Wants:
    """The tests' jobs name their model as their kind ("A", "B+x" for B with LoRA x; "txt2img": none)."""
    if job.kind == "txt2img":
        return dispatch.Wants()
    checkpoint, *loras = job.kind.split("+")
    return dispatch.Wants(checkpoint, frozenset(loras))


def test_affinity_prefers_the_worker_holding_the_model_and_keeps_the_queue_moving():
    a_job, b_job, any_job = _job(1, model="A"), _job(2, model="B"), _job(3)
    holds_a = dispatch.WorkerView(0, frozenset({"A"}), idle=True)
    holds_b = dispatch.WorkerView(1, frozenset({"B"}), idle=True)
    # each idle worker takes the job for the model it holds, whatever the order
    assert dispatch.choose([b_job, a_job], holds_a, [holds_a, holds_b], _wants) is a_job
    assert dispatch.choose([a_job, b_job], holds_b, [holds_a, holds_b], _wants) is b_job
    # a job for B waits for the idle worker that holds B rather than loading B on the other
    assert dispatch.choose([b_job], holds_a, [holds_a, holds_b], _wants) is None
    # ... but when the B worker is busy, loading B here keeps the queue moving
    busy_b = dispatch.WorkerView(1, frozenset({"B"}), idle=False)
    assert dispatch.choose([b_job], holds_a, [holds_a, busy_b], _wants) is b_job
    # a job that names no model runs anywhere
    assert dispatch.choose([any_job], holds_b, [holds_a, holds_b], _wants) is any_job


def test_a_busy_worker_is_sent_ahead_only_a_job_for_a_model_it_holds():
    a_job, b_job, any_job = _job(1, model="A"), _job(2, model="B"), _job(3)
    busy_a = dispatch.WorkerView(0, frozenset({"A"}), idle=False)
    assert dispatch.choose_ahead([b_job, a_job], busy_a, _wants) is a_job  # fair order, then the fit
    assert dispatch.choose_ahead([b_job], busy_a, _wants) is None  # B is not loaded here: it waits
    assert dispatch.choose_ahead([b_job, any_job], busy_a, _wants) is any_job


def test_affinity_prefers_the_worker_holding_the_most_requested_loras():
    with_x, with_xy = _job(1, model="A+x"), _job(2, model="A+x+y")
    holds_x = dispatch.WorkerView(0, frozenset({"A"}), True, {"A": frozenset({"x"})})
    holds_xy = dispatch.WorkerView(1, frozenset({"A"}), True, {"A": frozenset({"x", "y"})})
    plain = dispatch.WorkerView(2, frozenset({"A"}), True)
    views = [holds_x, holds_xy, plain]
    assert dispatch.choose([with_xy], holds_x, views, _wants) is None  # left to the one holding both
    assert dispatch.choose([with_xy], holds_xy, views, _wants) is with_xy
    assert dispatch.choose([with_x], plain, views, _wants) is None  # two idle workers hold x
    assert dispatch.choose([with_x, with_xy], holds_x, views, _wants) is with_x  # ties: FIFO
    # LoRAs read for another checkpoint do not count: the checkpoint decides first
    other_model = dispatch.WorkerView(3, frozenset({"A", "B"}), True, {"B": frozenset({"x", "y"})})
    assert dispatch.choose([with_xy], other_model, [other_model, holds_x], _wants) is None
    assert dispatch.fit(other_model, _wants(with_xy)) == (True, 0)
    # a job naming no checkpoint (the workers' default) still goes where its LoRAs are
    default_x = _job(4, model="txt2img")
    no_checkpoint = lambda job: dispatch.Wants(None, frozenset({"x"}))  # noqa: E731
    assert dispatch.choose([default_x], plain, views, no_checkpoint) is None
    assert dispatch.choose([default_x], holds_x, [holds_x, plain], no_checkpoint) is default_x
    # nobody idle holds more: a worker without the checkpoint loads it rather than the job waiting
    busy = dispatch.WorkerView(1, frozenset({"A"}), False, {"A": frozenset({"x", "y"})})
    empty = dispatch.WorkerView(0, frozenset(), True)
    assert dispatch.choose([with_xy], empty, [empty, busy], _wants) is with_xy


# --- on Ray: one server with two CPU workers for the whole run ---
# an extension recording its image-saving callbacks (in whichever process they run) to saved.jsonl
SAVING_PROBE = """
import json, os
from modules import paths, script_callbacks


def record(event, params):
    row = {"event": event, "pid": os.getpid(), "filename": params.filename, "size": list(params.image.size),
           "parameters": params.pnginfo.get("parameters"), "p": type(params.p).__name__,
           "prompt": params.p.prompt, "all_seeds": list(params.p.all_seeds), "model": params.p.sd_model_name}
    with open(os.path.join(paths.data_path, "saved.jsonl"), "a") as log:
        log.write(json.dumps(row) + "\\n")


def before(params):
    record("before", params)
    if "mark me" in params.p.prompt:
        params.pnginfo["parameters"] += ", Probe: marked"


script_callbacks.on_before_image_saved(before)
script_callbacks.on_image_saved(lambda params: record("saved", params))
"""


@pytest.fixture(scope="session")
def pool_server():
    data_dir = Path(tempfile.mkdtemp(prefix="sdw-"))  # Ray's socket paths must stay short
    write_tiny_checkpoints(data_dir, ("alpha", "beta"))
    for seed, name in enumerate(("ink", "tone")):
        save_safetensors(lora_tensors(seed=seed), data_dir / "models" / "Lora" / f"{name}.safetensors")
    probe = data_dir / "extensions" / "saving-probe" / "scripts"
    probe.mkdir(parents=True)
    (probe / "saving_probe.py").write_text(SAVING_PROBE)
    ray_dir = data_dir / "ray"
    flags_ = ["--workers", "2", "--ray-temp-dir", str(ray_dir), "--worker-step-timeout", "90"]
    try:
        with start_server(data_dir, flags_, timeout=600) as server:
            wait_until(lambda: _all_ready(server), "both Ray workers ready", timeout=600, interval=0.5)
            yield server
    finally:
        try:
            _no_ray_processes_left(ray_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def _all_ready(server) -> bool:
    workers = requests.get(server.api + "/workers", timeout=30).json()
    return len(workers) == 2 and all(w["ready"] for w in workers)


def _ray_pids(ray_dir: Path) -> list[int]:
    """Processes of this run's Ray (their command line names its temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(ray_dir).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _no_ray_processes_left(ray_dir: Path) -> None:
    deadline = time.monotonic() + 30
    while _ray_pids(ray_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _ray_pids(ray_dir)
    for pid in left:  # only processes this run's Ray started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray processes left behind after the server stopped: {left}"


def post(server, path, body=None, **kwargs):
    return requests.post(server.api + path, json=body if body is not None else {}, timeout=600, **kwargs)


def workers(server) -> dict[str, dict]:
    return {w["id"]: w for w in requests.get(server.api + "/workers", timeout=30).json()}


def pngs(server, seed: int) -> list[Path]:
    return sorted((server.data_dir / "outputs").rglob(f"*-{seed}.png"))


def infotext(b64: str) -> str:
    return Image.open(io.BytesIO(base64.b64decode(b64))).info["parameters"]


def test_jobs_run_on_two_worker_processes_and_the_front_saves_them(pool_server):
    before = workers(pool_server)
    assert {w["pid"] for w in before.values()} - {pool_server.process.pid} == {
        w["pid"] for w in before.values()
    }
    assert len({w["pid"] for w in before.values()}) == 2
    seeds = (7001, 7002)
    with ThreadPoolExecutor(2) as clients:
        answers = list(
            clients.map(
                lambda seed: post(pool_server, "/txt2img", {**TINY, "seed": seed, "save_images": True}), seeds
            )
        )
    for seed, answer in zip(seeds, answers, strict=True):
        assert answer.status_code == 200, answer.text
        info = json.loads(answer.json()["info"])
        assert info["seed"] == seed and info["worker"] in before
        assert f"Seed: {seed}," in infotext(answer.json()["images"][0])
        (saved,) = pngs(pool_server, seed)  # saved once, by the front, with the worker's infotext
        assert f"Seed: {seed}," in Image.open(saved).info["parameters"]
    after = workers(pool_server)
    done = sum(w["jobs_done"] for w in after.values()) - sum(w["jobs_done"] for w in before.values())
    assert done == 2 and all(w["current_job"] is None for w in after.values())
    memory = requests.get(pool_server.api + "/memory", timeout=30).json()
    assert sorted(w["id"] for w in memory["workers"]) == sorted(after)
    assert all(w["ram"]["rss"] > 0 for w in memory["workers"])


def test_image_saving_callbacks_run_in_front_for_jobs_a_worker_ran(pool_server):
    body = {**TINY, "prompt": "mark me", "seed": 8101, "save_images": True}
    answer = post(pool_server, "/txt2img", body)
    assert answer.status_code == 200, answer.text
    (saved,) = pngs(pool_server, 8101)
    rows = [json.loads(line) for line in (pool_server.data_dir / "saved.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["all_seeds"] == [8101]]
    assert [row["event"] for row in rows] == ["before", "saved"]  # once each, for the one image
    before, after = rows
    assert {row["pid"] for row in rows} == {pool_server.process.pid}  # where the front saves
    assert after["filename"] == str(saved) and before["size"] == after["size"] == [64, 64]
    assert all(row["p"] == "StableDiffusionProcessingTxt2Img" and row["prompt"] == "mark me" for row in rows)
    assert before["model"] == "alpha" and "Seed: 8101," in before["parameters"]
    # the before-callback's change is in the file, not in the image the API returns (as in process)
    assert Image.open(saved).info["parameters"].endswith(", Probe: marked")
    assert "Probe: marked" not in infotext(answer.json()["images"][0])


def test_jobs_naming_a_lora_go_to_the_worker_holding_it(pool_server):
    """Both workers hold the default checkpoint: the worker that read a LoRA gets the next jobs naming it."""
    ink = str((pool_server.data_dir / "models" / "Lora" / "ink.safetensors").resolve())
    body = {**TINY, "prompt": "a cube <lora:ink:0.8>"}
    first = post(pool_server, "/txt2img", {**body, "seed": 31})
    assert first.status_code == 200, first.text
    holder = json.loads(first.json()["info"])["worker"]
    held = workers(pool_server)
    assert ink in held[holder]["loaded_loras"]
    assert all(ink not in w["loaded_loras"] for name, w in held.items() if name != holder)
    for seed in range(32, 36):  # one at a time: both workers are idle at each choice
        info = json.loads(post(pool_server, "/txt2img", {**body, "seed": seed}).json()["info"])
        assert info["worker"] == holder and info["seed"] == seed
        assert "<lora:ink:0.8>" in info["prompt"] and "Lora hashes" in info["infotexts"][0]


@pytest.mark.slow
def test_sixteen_clients_two_jobs_each_get_their_seeds_and_infotexts(pool_server):
    def client(n: int) -> list[tuple[int, dict, str]]:
        out = []
        for k in range(2):
            seed = 2000 + n * 10 + k
            answer = post(pool_server, "/txt2img", {**TINY, "seed": seed, "prompt": f"client {n} job {k}"})
            assert answer.status_code == 200, answer.text
            out.append((seed, json.loads(answer.json()["info"]), infotext(answer.json()["images"][0])))
        return out

    with ThreadPoolExecutor(16) as clients:
        results = [item for chunk in clients.map(client, range(16)) for item in chunk]
    assert len(results) == 32
    for seed, info, text in results:
        assert info["seed"] == seed and info["all_seeds"] == [seed]
        n, k = divmod(seed - 2000, 10)
        assert info["prompt"] == f"client {n} job {k}" and text.startswith(f"client {n} job {k}\n")
        assert f"Seed: {seed}," in text and "Model: alpha" in text
    assert {info["worker"] for _, info, _ in results} == {"worker0", "worker1"}  # both took jobs


@pytest.mark.slow
def test_jobs_for_a_model_go_to_the_worker_that_holds_it(pool_server):
    beta = {**TINY, "override_settings": {"sd_model_checkpoint": "beta"}}
    first = json.loads(post(pool_server, "/txt2img", {**beta, "seed": 1}).json()["info"])
    holder = first["worker"]
    assert first["sd_model_name"] == "beta"
    assert any(m.endswith("beta.safetensors") for m in workers(pool_server)[holder]["loaded_models"])
    for seed in range(2, 6):  # one at a time: both workers are idle at each choice
        model = "beta" if seed % 2 else "alpha"
        body = {**TINY, "seed": seed, "override_settings": {"sd_model_checkpoint": model}}
        info = json.loads(post(pool_server, "/txt2img", body).json()["info"])
        assert info["sd_model_name"] == model
        assert (info["worker"] == holder) == (model == "beta"), (seed, model, info["worker"])


def _live(server, task_id: str) -> dict:
    return requests.post(server.url + "/internal/progress", json={"id_task": task_id}, timeout=30).json()


def _wait_running(server, task_id: str) -> dict:
    """The job's progress once it runs and a live preview came back from its worker."""

    def seen():
        body = _live(server, task_id)
        return body if body["active"] and body["progress"] > 0 and body.get("live_preview") else None

    return wait_until(seen, f"{task_id} running with a live preview", timeout=300)


def _wait_done(server, task_id: str) -> dict:
    return wait_until(
        lambda: (
            (s := requests.get(f"{server.api}/tasks/{task_id}", timeout=30).json())["status"]
            in ("done", "failed", "cancelled")
            and s
        ),
        f"{task_id} finished",
        timeout=600,
    )


@pytest.mark.slow
def test_interrupt_skip_and_cancel_reach_the_worker_running_the_job(pool_server):
    long_id = post(pool_server, "/txt2img?async=true", {**LONG, "n_iter": 3, "seed": 9}).json()["task_id"]
    live = _wait_running(pool_server, long_id)
    assert live["live_preview"].startswith("data:image/jpeg;base64,")  # previews come back from the worker
    assert post(pool_server, "/interrupt", params={"id_task": long_id}).json()["interrupted"] == [long_id]
    info = json.loads(_wait_done(pool_server, long_id)["result"]["info"])
    assert info["interrupted"] is True and info["all_seeds"] == [9]  # partial: the first batch only

    skipped_id = post(pool_server, "/txt2img?async=true", {**LONG, "seed": 11}).json()["task_id"]
    _wait_running(pool_server, skipped_id)
    assert post(pool_server, "/skip", params={"id_task": skipped_id}).json()["skipped"] == [skipped_id]
    status = _wait_done(pool_server, skipped_id)
    assert status["status"] == "done" and json.loads(status["result"]["info"])["seed"] == 11

    blockers = [
        post(pool_server, "/txt2img?async=true", {**LONG, "seed": s}).json()["task_id"] for s in (1, 2)
    ]
    victim = post(pool_server, "/txt2img?async=true", {**TINY, "seed": 3}).json()["task_id"]
    for blocker in blockers:
        _wait_running(pool_server, blocker)
    # both workers are busy: the victim was sent ahead to one of them, and is still queued to the user
    task = requests.get(f"{pool_server.api}/tasks/{victim}", timeout=30).json()
    assert (task["status"], task["queue_position"]) == ("queued", 0)
    assert _live(pool_server, victim)["queued"] is True
    assert post(pool_server, f"/tasks/{victim}/cancel").json() == {"task_id": victim, "cancelled": True}
    assert _wait_done(pool_server, victim)["status"] == "cancelled"
    for blocker in blockers:
        post(pool_server, f"/tasks/{blocker}/cancel")  # running: interrupted on its worker
        done = _wait_done(pool_server, blocker)
        assert done["status"] == "done", done
        assert json.loads(done["result"]["info"])["interrupted"] is True


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(pool_server):
    """kill -9 the worker running a job: it is retried once on the other worker ("retrying" in its
    progress), saved exactly once, and a replacement worker starts."""
    body = {"width": 192, "height": 192, "steps": 80, "seed": 4242, "save_images": True}
    task_id = post(pool_server, "/txt2img?async=true", body).json()["task_id"]
    victim = wait_until(
        lambda: next((w for w in workers(pool_server).values() if w["current_job"] == task_id), None),
        "the job running on a worker",
        timeout=120,
    )
    _wait_running(pool_server, task_id)
    os.kill(victim["pid"], signal.SIGKILL)
    retrying = wait_until(
        lambda: "retrying" in (text := _live(pool_server, task_id)["textinfo"]) and text,
        "the job shown as retrying",
        timeout=120,
    )
    assert victim["id"] in retrying
    status = _wait_done(pool_server, task_id)
    assert status["status"] == "done", status
    info = json.loads(status["result"]["info"])
    assert info["seed"] == 4242 and info["worker"] != victim["id"]
    (saved,) = pngs(pool_server, 4242)  # exactly one PNG: the dead worker saved nothing
    assert "Seed: 4242," in Image.open(saved).info["parameters"]
    replaced = wait_until(
        lambda: (w := workers(pool_server)[victim["id"]])["ready"] and w["pid"] != victim["pid"] and w,
        "a replacement worker",
        timeout=600,
    )
    assert replaced["restarts"] == 1
    again = post(pool_server, "/txt2img", {**TINY, "seed": 4243})
    assert again.status_code == 200 and json.loads(again.json()["info"])["seed"] == 4243


@pytest.mark.slow
def test_a_job_sent_ahead_to_a_killed_worker_goes_back_to_its_place_in_line(pool_server):
    """Both workers busy: the next job is sent ahead to one. kill -9 that one: its running job is retried
    ("retrying"), the job sent ahead was never tried (no "retrying"), and each is saved once."""
    long = {"width": 192, "height": 192, "steps": 80, "save_images": True}
    running = [
        post(pool_server, "/txt2img?async=true", {**long, "seed": s}).json()["task_id"] for s in (61, 62)
    ]
    ahead = post(pool_server, "/txt2img?async=true", {**TINY, "seed": 63, "save_images": True}).json()[
        "task_id"
    ]
    victim = wait_until(
        lambda: next((w for w in workers(pool_server).values() if w["next_job"] == ahead), None),
        "the tiny job sent ahead to a busy worker",
        timeout=120,
    )
    _wait_running(pool_server, victim["current_job"])
    os.kill(victim["pid"], signal.SIGKILL)
    texts = []

    def finished() -> bool:
        texts.append(_live(pool_server, ahead)["textinfo"] or "")
        return requests.get(f"{pool_server.api}/tasks/{ahead}", timeout=30).json()["status"] == "done"

    wait_until(finished, "the job sent ahead done", timeout=600)
    assert not any("retrying" in text for text in texts), texts
    retried = _wait_done(pool_server, victim["current_job"])
    assert retried["status"] == "done" and json.loads(retried["result"]["info"])["worker"] != victim["id"]
    for task_id, seed in zip((*running, ahead), (61, 62, 63), strict=True):
        assert _wait_done(pool_server, task_id)["status"] == "done"
        assert len(pngs(pool_server, seed)) == 1
    wait_until(
        lambda: (w := workers(pool_server)[victim["id"]])["ready"] and w["pid"] != victim["pid"],
        "a replacement worker",
        timeout=600,
    )


@pytest.mark.slow
def test_a_worker_hanging_past_the_step_timeout_is_treated_as_dead(pool_server):
    """SIGSTOP the worker running a job: after --worker-step-timeout (90 s here) without progress it is
    killed, the job completes on the other worker, and a replacement starts."""
    body = {"width": 192, "height": 192, "steps": 80, "seed": 5151, "save_images": True}
    task_id = post(pool_server, "/txt2img?async=true", body).json()["task_id"]
    victim = wait_until(
        lambda: next((w for w in workers(pool_server).values() if w["current_job"] == task_id), None),
        "the job running on a worker",
        timeout=120,
    )
    _wait_running(pool_server, task_id)
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        retrying = wait_until(
            lambda: "retrying" in (text := _live(pool_server, task_id)["textinfo"]) and text,
            "the hung job shown as retrying",
            timeout=300,
        )
        assert "no progress" in retrying and victim["id"] in retrying
        status = _wait_done(pool_server, task_id)
        assert status["status"] == "done" and json.loads(status["result"]["info"])["worker"] != victim["id"]
        assert len(pngs(pool_server, 5151)) == 1
        wait_until(
            lambda: (w := workers(pool_server)[victim["id"]])["ready"] and w["pid"] != victim["pid"],
            "a replacement for the hung worker",
            timeout=600,
        )
    finally:
        try:
            os.kill(victim["pid"], signal.SIGKILL)  # the stopped process this test made (if Ray left it)
        except ProcessLookupError:
            pass
