"""A pool worker's side of jobs sent ahead (sdwebui.worker_backend.StackBackend, in process, no Ray): they
start in the order the front sent them, each with its own settings once the one before it has ended, and
one cancelled while it waits leaves at once."""

from __future__ import annotations

import threading

import pytest

from modules import cmd_args
from sdwebui.engine.generate import generate as engine_generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.jobs.queue import CANCELLED_BEFORE_START
from sdwebui.jobs.remote import RemoteFailure, RemoteJob, RemoteResult
from sdwebui.services import ScriptCall, build_services
from sdwebui.worker_backend import StackBackend
from tests import tiny_models
from tests.waiting import wait_until

KEY = "CLIP_stop_at_last_layers"  # a setting the test reads while each job runs


@pytest.fixture
def worker(tmp_path, tiny_model_factory):
    folder = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(tiny_model_factory("sd1"), folder / "alpha.safetensors")
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"])
    seen: list[tuple[int, str, object]] = []  # (seed, "start" / "end", the setting's value then)
    release = threading.Event()  # the first job runs until the test lets it end

    def generate(model, req, ctx, settings, hooks=None):
        seen.append((req.seed, "start", services.options.get(KEY)))
        if req.seed == 0:
            assert release.wait(120)
        seen.append((req.seed, "end", services.options.get(KEY)))
        return engine_generate(model, req, ctx, settings, hooks)

    services = build_services(args, generate=generate)
    backend = StackBackend(services)
    yield backend, seen, release
    release.set()
    services.shutdown()


def remote_job(backend: StackBackend, seed: int, turn: int, clip_skip: int) -> RemoteJob:
    request = Txt2ImgRequest(prompt="a cube", seed=seed, steps=2, width=64, height=64, sampler_name="Euler")
    options = {**backend.services.options.items(), KEY: clip_skip}
    return RemoteJob(f"task({seed})", request, ScriptCall("txt2img"), options, turn=turn)


def run_in_thread(backend: StackBackend, job: RemoteJob) -> tuple[threading.Thread, list]:
    items: list = []
    thread = threading.Thread(target=lambda: items.extend(backend.run(job)), daemon=True)
    thread.start()
    return thread, items


def test_jobs_sent_ahead_start_in_turn_with_their_own_settings(worker):
    backend, seen, release = worker
    # the second job's call arrives first: it waits for its turn, then for the first job to end
    second, second_items = run_in_thread(backend, remote_job(backend, 1, turn=1, clip_skip=2))
    first, first_items = run_in_thread(backend, remote_job(backend, 0, turn=0, clip_skip=1))
    wait_until(lambda: seen, "the first job running", timeout=120)
    second.join(0.5)
    assert second.is_alive() and seen == [(0, "start", 1)]  # the first runs; the second waits
    release.set()
    first.join(120), second.join(120)
    assert seen == [(0, "start", 1), (0, "end", 1), (1, "start", 2), (1, "end", 2)]
    for items, seed in ((first_items, 0), (second_items, 1)):
        outcome = items[-1]
        assert isinstance(outcome, RemoteResult) and outcome.result.images[0].seed == seed
        assert any(getattr(item, "running", False) for item in items[:-1])  # its start was sent


def test_a_job_cancelled_while_it_waits_for_its_turn_leaves_at_once(worker):
    backend, seen, release = worker
    first, first_items = run_in_thread(backend, remote_job(backend, 0, turn=0, clip_skip=1))
    waiting, waiting_items = run_in_thread(backend, remote_job(backend, 1, turn=1, clip_skip=1))
    wait_until(lambda: seen, "the first job running", timeout=120)
    backend.interrupt("task(1)")  # the front's cancel of a job it sent ahead
    waiting.join(30)
    assert not waiting.is_alive() and first.is_alive()  # it left while the first one still runs
    assert waiting_items == [RemoteFailure(CANCELLED_BEFORE_START)]
    release.set()
    first.join(120)
    assert isinstance(first_items[-1], RemoteResult)
    assert [seed for seed, _, _ in seen] == [0, 0]  # the cancelled job never ran
    # the turn it left is not waited for: the next job sent runs
    third, third_items = run_in_thread(backend, remote_job(backend, 2, turn=2, clip_skip=1))
    third.join(120)
    assert isinstance(third_items[-1], RemoteResult) and third_items[-1].result.images[0].seed == 2
