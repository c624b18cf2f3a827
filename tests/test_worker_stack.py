"""Worker stacks (sdwebui.jobs.stack): several in one process run jobs side by side, sharing nothing."""

from __future__ import annotations

import contextlib
import threading

import pytest

from modules import cmd_args
from sdwebui.engine.generate import generate as engine_generate
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.jobs.generation import GenerationJob
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.services import build_services
from tests import tiny_models


def request(seed: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a cube", seed=seed, steps=2, width=64, height=64, sampler_name="Euler")


@pytest.fixture
def args(tmp_path, tiny_model_factory):
    folder = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(tiny_model_factory("sd1"), folder / "alpha.safetensors")
    return cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"])


def test_the_default_app_has_one_stack(args):
    services = build_services(args)
    try:
        (stack,) = services.stacks
        assert services.jobs is stack.jobs and services.models is stack.models and stack.device == "cpu"
        job = services.submit_generation(request(1))
        job.wait(300)
        assert job.worker == stack.name and isinstance(job.generation, GenerationJob)
        assert job.generation.ran_on.info.name == "alpha" and job.generation.lease is None
    finally:
        services.shutdown()


def test_two_stacks_run_jobs_in_parallel_on_their_own_models_and_queues(args):
    both_running = threading.Barrier(2, timeout=120)  # broken unless both jobs run at the same time
    ran: dict[str, object] = {}

    def generate(model, req, ctx, settings, hooks=None):
        ran[threading.current_thread().name] = model
        both_running.wait()
        return engine_generate(model, req, ctx, settings, hooks)

    services = build_services(args, generate=generate, devices=["cpu", "cpu"])
    try:
        first, second = services.stacks
        assert first.jobs is not second.jobs and first.models is not second.models
        assert (first.device, second.device) == ("cpu", "cpu")
        jobs = [
            services.submit_generation(request(n), stack=stack) for n, stack in enumerate(services.stacks)
        ]
        results = [job.wait(300) for job in jobs]
        assert [job.worker for job in jobs] == [first.name, second.name]
        assert [job.generation.stack for job in jobs] == [first.name, second.name]
        assert first.jobs.get(jobs[1].id) is None and second.jobs.get(jobs[0].id) is None
        # each ran on its own stack's model: one checkpoint, two loaded copies, no module shared
        on_first, on_second = ran[f"{first.name}-worker-0"], ran[f"{second.name}-worker-0"]
        assert on_first.unet is first.models.current.unet and on_second.unet is second.models.current.unet
        assert on_first.unet is not on_second.unet and on_first.vae is not on_second.vae
        # one hash cache for both managers: loading at the same time neither fails nor falls back
        assert on_first.info.name == on_second.info.name == "alpha" and not services.all_notices()
        assert [r.seeds for r in results] == [[0], [1]]
    finally:
        services.shutdown()


def test_a_stack_finds_a_checkpoint_by_the_title_another_stack_hashed(args):
    """The first stack to load the settings' model writes its title with the new hash to
    sd_model_checkpoint; another stack that listed the files before that hash existed finds the model by
    that title (the shared hash cache has it), instead of falling back with a notice."""
    services = build_services(args, devices=["cpu", "cpu"])
    try:
        first, second = (stack.models.manager for stack in services.stacks)
        hashed = first.hash_of(first.find_checkpoint("alpha"))
        assert hashed.title == f"alpha.safetensors [{hashed.sha256[:10]}]"
        found = second.find_checkpoint(hashed.title)
        assert found.filename == hashed.filename and found.sha256 == hashed.sha256
        with pytest.raises(CheckpointLoadError, match="not found"):  # an unknown hash is still unknown
            second.find_checkpoint("alpha.safetensors [0123456789]")
    finally:
        services.shutdown()


def test_the_facade_hook_is_entered_around_each_job_of_its_stack(args):
    services = build_services(args, devices=["cpu", "cpu"])
    seen: list[tuple[str, str, str]] = []

    def scope(name):
        @contextlib.contextmanager
        def around(job):
            seen.append((name, job.id, threading.current_thread().name))
            yield

        return around

    try:
        for stack in services.stacks:
            stack.bind_facade(scope(stack.name))
        first, second = services.stacks
        job = services.submit_generation(request(5), stack=second)
        job.wait(300)
        assert seen == [(second.name, job.id, f"{second.name}-worker-0")]
    finally:
        services.shutdown()


def test_models_or_devices_not_both(args):
    with pytest.raises(ValueError, match="not both"):
        build_services(args, models=object(), devices=["cpu"])
