"""Memory modes on the CPU: each component where its stage needs it, moved once per job (a fake offload
device tracks where every module is, since on the CPU a real move changes nothing), lowvram's streaming,
the automatic plan and its GPU-weights cap, out-of-memory retries and the VAE's tiling and fp32 fallback."""

from __future__ import annotations

import logging
import weakref

import numpy as np
import pytest
import torch

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.memory import offload
from sdwebui.engine.memory.oom import MemoryExhausted
from sdwebui.engine.memory.placement import Mover, using_mover
from sdwebui.engine.memory.plan import (
    TEXT,
    UNET,
    VAE,
    JobSize,
    component_bytes,
    inference_bytes,
    plan_placement,
)
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.vae import NaNLatentsError

HOST = torch.device("cpu", 1)  # the fake offload device: real tensors stay on the CPU, the mover tracks it


class FakeDeviceMover(Mover):
    """Records every move and where each module is, with HOST as the offload device."""

    offload = HOST

    def __init__(self) -> None:
        self.at: weakref.WeakKeyDictionary[torch.nn.Module, torch.device] = weakref.WeakKeyDictionary()
        self.moves: list[tuple[int, torch.device]] = []

    def move(self, module: torch.nn.Module, device: torch.device) -> None:
        self.at[module] = device
        self.moves.append((id(module), device))

    def where(self, module: torch.nn.Module) -> torch.device:
        return self.at.get(module, torch.device("cpu"))

    def count(self, module: torch.nn.Module) -> int:
        return sum(1 for key, _ in self.moves if key == id(module))


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", negative_prompt="blurry", seed=7, steps=2, width=64, height=64)
    base.update(changes)
    return Txt2ImgRequest(sampler_name="Euler", **base)


def run(model, req, hooks=None, **memory) -> list[np.ndarray]:
    settings = EngineSettings(save_images=False, memory=MemorySettings(**memory))
    result = generate(model, req, JobContext(), settings, hooks)
    return [np.asarray(item.image, dtype=np.int16) for item in result.images]


def watch(model, mover: FakeDeviceMover, seen: list[tuple[str, str, bool]], stage: list[str]) -> list:
    """Forward pre-hooks: (component, stage, on the compute device?) at every forward."""
    parts = {TEXT: model.text_encoders[0], UNET: model.unet, VAE: model.vae.decoder}
    owners = {TEXT: model.text_encoders[0], UNET: model.unet, VAE: model.vae}

    def hook(name):
        def pre(module, args):
            on_device = offload.is_streamed(owners[name]) or mover.where(owners[name]) == torch.device("cpu")
            seen.append((name, stage[0], on_device))

        return pre

    return [module.register_forward_pre_hook(hook(name)) for name, module in parts.items()]


def stage_hooks(stage: list[str], batches: list[tuple[str, list[int]]]) -> EngineHooks:
    def before(args):
        stage[0] = args.stage
        batches.append((args.stage, list(args.batch_numbers)))

    return EngineHooks(before_stage=before)


def test_medvram_each_component_on_the_device_in_its_stage_and_moved_once_per_job(tiny_sd1_model):
    model = tiny_sd1_model
    plain = run(model, request(n_iter=3), mode="gpu")
    mover, seen, stage, batches = FakeDeviceMover(), [], [""], []
    handles = watch(model, mover, seen, stage)
    try:
        with using_mover(mover):
            images = run(model, request(n_iter=3), stage_hooks(stage, batches), mode="medvram")
    finally:
        for handle in handles:
            handle.remove()
    assert all(np.array_equal(a, b) for a, b in zip(images, plain, strict=True))
    # stage by stage over the whole job (all three batches' conditioning first)
    assert batches == [("conditioning", [0, 1, 2]), ("sampling", [0, 1, 2]), ("decode", [0, 1, 2])]
    assert {(name, where) for name, where, _ in seen} == {
        (TEXT, "conditioning"),
        (UNET, "sampling"),
        (VAE, "decode"),
    }
    assert all(on_device for *_, on_device in seen)
    # U-Net: off (conditioning), on (sampling), off (decode); text encoder off once; VAE off then on
    text, unet, vae = model.text_encoders[0], model.unet, model.vae
    assert (mover.count(text), mover.count(unet), mover.count(vae)) == (1, 3, 2)
    assert mover.where(vae) == torch.device("cpu") and mover.where(unet) == HOST and mover.where(text) == HOST
    # the next job starts where this one ended: the text encoder comes back, the VAE leaves
    with using_mover(mover):
        run(model, request(n_iter=2), mode="medvram")
    assert (mover.count(text), mover.count(unet), mover.count(vae)) == (3, 5, 4)
    with using_mover(mover):  # back to "everything on the device": each comes back once, and stays
        run(model, request(), mode="gpu")
        run(model, request(), mode="gpu")
    assert all(mover.where(m) == torch.device("cpu") for m in (text, unet, vae))
    assert (mover.count(text), mover.count(unet), mover.count(vae)) == (4, 6, 4)


def test_medvram_sdxl_moves_only_sdxl_models(tiny_sd1_model, tiny_sdxl_model):
    mover, batches = FakeDeviceMover(), []
    with using_mover(mover):
        run(tiny_sd1_model, request(n_iter=2), stage_hooks([""], batches), mode="medvram-sdxl")
        assert mover.moves == [] and batches[0] == ("conditioning", [0])  # A1111's batch-by-batch order
        run(tiny_sdxl_model, request(n_iter=2), mode="medvram-sdxl")
    assert mover.count(tiny_sdxl_model.unet) == 3
    assert all(mover.count(encoder) == 1 for encoder in tiny_sdxl_model.text_encoders)


def test_lowvram_streams_the_unet_and_text_encoders_block_by_block(tiny_sd1_model):
    model = tiny_sd1_model
    plain = run(model, request(), mode="gpu")
    seen, stage = [], [""]
    streamed: list[bool] = []
    handle = model.unet.register_forward_pre_hook(lambda m, a: streamed.append(offload.is_streamed(m)))
    mover = FakeDeviceMover()
    handles = watch(model, mover, seen, stage)
    try:
        with using_mover(mover):
            images = run(model, request(), stage_hooks(stage, []), mode="lowvram")
            assert offload.is_streamed(model.unet) and offload.is_streamed(model.text_encoders[0])
            assert all(on_device for *_, on_device in seen) and streamed and all(streamed)
            assert np.array_equal(images[0], plain[0])
            assert run(model, request(), mode="gpu")[0].tolist() == plain[0].tolist()
    finally:
        handle.remove()
        for h in handles:
            h.remove()
    assert not offload.is_streamed(model.unet) and not offload.is_streamed(model.text_encoders[0])


def test_automatic_plan_keeps_what_fits_and_the_gpu_weights_cap(tiny_sd1_model):
    model, job = tiny_sd1_model, JobSize(64, 64, 1)
    sizes = component_bytes(model)
    assert plan_placement(model, MemorySettings(), job, None).offload == frozenset()  # the CPU: not limited
    unet_work, _ = inference_bytes(model, job)
    total = sum(sizes.values())

    def with_budget(budget: int, **settings):  # free memory that leaves `budget` for weights
        return plan_placement(model, MemorySettings(**settings), job, budget - total + unet_work)

    assert not with_budget(total).moves_between_stages
    per_stage = with_budget(total - 1)
    assert per_stage.offload == {TEXT, UNET, VAE} and not per_stage.stream
    assert with_budget(sizes[TEXT] - 1).stream == {TEXT}
    # the cap in MB: the tiny model's ~10 MB over a cap of 8 MB -> per stage; 5 MB -> text encoder streamed
    assert plan_placement(model, MemorySettings(gpu_weights_mb=8), job, None).offload == {TEXT, UNET, VAE}
    assert plan_placement(model, MemorySettings(gpu_weights_mb=5), job, None).stream == {TEXT}
    assert not plan_placement(model, MemorySettings(gpu_weights_mb=64), job, None).moves_between_stages
    mover = FakeDeviceMover()
    with using_mover(mover):
        run(model, request(), gpu_weights_mb=8)
    assert mover.count(model.unet) == 3


class OOMOnce:
    """A forward pre-hook that raises torch.OutOfMemoryError `times` times (as CUDA's allocator does)."""

    def __init__(self, times: int, only_untiled_vae=None):
        self.times, self.calls, self.vae = times, 0, only_untiled_vae

    def __call__(self, module, args):
        self.calls += 1
        if self.times > 0 and (self.vae is None or not self.vae.use_tiling):
            self.times -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (injected)")


def test_sampling_out_of_memory_retries_once_streamed(tiny_sd1_model, caplog):
    model = tiny_sd1_model
    plain = run(model, request(), mode="gpu")
    handle = model.unet.register_forward_pre_hook(OOMOnce(1))
    try:
        with caplog.at_level(logging.WARNING):
            images = run(model, request(), mode="gpu")
        assert np.array_equal(images[0], plain[0])
        assert "retrying with lowvram" in caplog.text
    finally:
        handle.remove()
    run(model, request(), mode="gpu")  # and back
    assert not offload.is_streamed(model.unet)


def test_out_of_memory_twice_fails_naming_the_settings(tiny_sd1_model):
    handle = tiny_sd1_model.unet.register_forward_pre_hook(OOMOnce(5))
    try:
        with pytest.raises(MemoryExhausted, match="out of memory during sampling.*--lowvram"):
            run(tiny_sd1_model, request(), mode="gpu")
    finally:
        handle.remove()
    assert len(run(tiny_sd1_model, request(), mode="gpu")) == 1  # the next job runs


def test_vae_out_of_memory_decodes_again_tiled(tiny_sd1_model, caplog):
    model = tiny_sd1_model
    inject = OOMOnce(1, only_untiled_vae=model.vae)
    handle = model.vae.decoder.register_forward_pre_hook(inject)
    try:
        with caplog.at_level(logging.WARNING):
            images = run(model, request(width=128, height=128), mode="gpu")
    finally:
        handle.remove()
    assert "decoding again tiled" in caplog.text and images[0].shape == (128, 128, 3)
    assert inject.calls > 2 and not model.vae.use_tiling  # several tiles; the shared VAE as it was


def test_vae_tiling_for_large_images_and_always(tiny_sd1_model):
    calls = []
    handle = tiny_sd1_model.vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[-1]))
    try:
        run(tiny_sd1_model, request(width=128, height=128), vae_tiling_min_pixels=256 * 256)
        assert calls == [16]  # one untiled decode of 16x16 latents
        calls.clear()
        run(tiny_sd1_model, request(width=128, height=128), vae_tiling_min_pixels=128 * 128)
        assert len(calls) > 1 and max(calls) < 16
        calls.clear()
        run(tiny_sd1_model, request(width=128, height=128), vae_tiling="always")
        assert len(calls) > 1
    finally:
        handle.remove()


@pytest.fixture
def half_vae_model(tiny_model_factory):
    model = tiny_model_factory("sd1")
    model.vae.to(torch.bfloat16)
    model.vae_dtype = torch.bfloat16
    return model


def overflow_in_half(module, args, output):
    """What SDXL's VAE does in fp16: NaN out of the decoder (here whenever it runs in half precision)."""
    if next(module.parameters()).dtype != torch.float32:
        return output * float("nan")
    return None


def test_nan_in_the_half_vae_decodes_again_in_fp32(half_vae_model, caplog):
    handle = half_vae_model.vae.decoder.register_forward_hook(overflow_in_half)
    try:
        with caplog.at_level(logging.WARNING):
            images = run(half_vae_model, request())
        assert "decoding again in float32" in caplog.text and images[0].std() > 0
        assert next(half_vae_model.vae.parameters()).dtype == torch.bfloat16  # back in its precision
        with pytest.raises(NaNLatentsError, match="--no-half-vae"):
            run(half_vae_model, request(), auto_vae_precision=False)
    finally:
        handle.remove()


def test_bad_memory_settings_are_refused():
    with pytest.raises(ValueError, match="memory mode"):
        MemorySettings(mode="tiny")
    with pytest.raises(ValueError, match="vae_tiling"):
        MemorySettings(vae_tiling="sometimes")
