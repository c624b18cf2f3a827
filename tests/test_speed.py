"""Speed settings through `generate` on the tiny models: s_min_uncond skips the uncond forward below its
sigma; fp8 weight storage for a job, undone exactly; channels-last for a job."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.speed.settings import SpeedSettings


def run_counting_rows(model, **settings) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = model.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        request = Txt2ImgRequest(
            prompt="a cat",
            negative_prompt="blurry",
            seed=3,
            steps=6,
            width=64,
            height=64,
            sampler_name="Euler",
        )
        result = generate(model, request, JobContext(), EngineSettings(save_images=False, **settings))
    finally:
        handle.remove()
    return rows, result


def test_s_min_uncond_skips_the_uncond_forward_below_the_sigma(tiny_sd1_model):
    rows, plain = run_counting_rows(tiny_sd1_model)
    assert rows == [2] * 6  # batched CFG: uncond + cond in one forward per step
    rows, skipped = run_counting_rows(tiny_sd1_model, s_min_uncond=1.0)
    # Euler's 6 sigmas from ~14.6 down: the low-noise tail runs the cond row alone
    assert rows[0] == 2 and rows[-1] == 1 and 0 < rows.count(1) < 6
    assert "NGMS: 1," in skipped.images[0].infotext and "NGMS" not in plain.images[0].infotext
    first, second = (np.asarray(r.images[0].image, dtype=np.int16) for r in (plain, skipped))
    assert not np.array_equal(first, second)
    rows, _ = run_counting_rows(tiny_sd1_model, s_min_uncond=100.0)
    assert rows == [1] * 6


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def test_fp8_storage_round_trip(tiny_sd1_model, tiny_sdxl_model):
    model = tiny_sd1_model
    weights = {name: p.detach().clone() for name, p in model.unet.named_parameters()}
    _, plain = run_counting_rows(model)
    seen: list[set] = []
    layer = model.unet.down_blocks[0].resnets[0].conv1
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append({m.weight.dtype}), prepend=True)
    try:
        _, fp8 = run_counting_rows(model, speed=SpeedSettings(fp8_storage="Enable"))
    finally:
        handle.remove()
    assert seen and all(dtypes == {torch.float8_e4m3fn} for dtypes in seen)  # stored in fp8 between layers
    assert "FP8 weight: Enable" in fp8.images[0].infotext
    difference = np.abs(pixels(fp8) - pixels(plain))
    assert 0 < difference.mean() < 40  # the same picture, in fewer bits
    assert all(torch.equal(weights[name], p) for name, p in model.unet.named_parameters())  # exactly undone
    assert np.array_equal(pixels(run_counting_rows(model)[1]), pixels(plain))
    _, sd1 = run_counting_rows(model, speed=SpeedSettings(fp8_storage="Enable for SDXL"))
    assert "FP8 weight" not in sd1.images[0].infotext
    _, sdxl = run_counting_rows(tiny_sdxl_model, speed=SpeedSettings(fp8_storage="Enable for SDXL"))
    assert "FP8 weight: Enable" in sdxl.images[0].infotext


def test_fp8_with_lowvram_streaming(tiny_sd1_model):
    _, fp8 = run_counting_rows(tiny_sd1_model, speed=SpeedSettings(fp8_storage="Enable"))
    _, both = run_counting_rows(
        tiny_sd1_model, speed=SpeedSettings(fp8_storage="Enable"), memory=MemorySettings(mode="lowvram")
    )
    assert np.array_equal(pixels(both), pixels(fp8))
    assert not any(p.dtype == torch.float8_e4m3fn for p in tiny_sd1_model.unet.parameters())
    run_counting_rows(tiny_sd1_model, memory=MemorySettings(mode="gpu"))  # the shared test model unstreamed


def test_channels_last_for_the_job_only(tiny_sd1_model):
    _, plain = run_counting_rows(tiny_sd1_model)
    formats: list[bool] = []
    conv = tiny_sd1_model.unet.conv_in
    handle = conv.register_forward_pre_hook(
        lambda m, a: formats.append(m.weight.is_contiguous(memory_format=torch.channels_last))
    )
    try:
        _, fast = run_counting_rows(tiny_sd1_model, speed=SpeedSettings(channels_last=True))
    finally:
        handle.remove()
    assert formats and all(formats) and conv.weight.is_contiguous()
    assert np.abs(pixels(fast) - pixels(plain)).max() <= 1


def test_bf16_compute_is_in_the_infotext(tiny_model_factory):
    model = tiny_model_factory("sd1")
    for module in (model.unet, *model.text_encoders):
        module.to(torch.bfloat16)
    model.dtype = torch.bfloat16
    _, result = run_counting_rows(model)
    assert "Precision: bf16" in result.images[0].infotext and np.asarray(result.images[0].image).std() > 0


def test_token_merging_merges_self_attention_tokens_for_the_pass(tiny_sd1_model):
    unet = tiny_sd1_model.unet
    processors = dict(unet.attn_processors)
    lengths: list[int] = []
    attn1 = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    handle = attn1.to_q.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    try:
        _, plain = run_counting_rows(tiny_sd1_model)
        assert set(lengths) == {64}  # 64x64 image: an 8x8 latent grid
        lengths.clear()
        _, merged = run_counting_rows(tiny_sd1_model, speed=SpeedSettings(token_merging_ratio=0.5))
    finally:
        handle.remove()
    assert set(lengths) == {32}  # half the tokens merged away before the self-attention
    assert "Token merging ratio: 0.5" in merged.images[0].infotext
    assert 0 < np.abs(pixels(merged) - pixels(plain)).mean() < 40
    assert dict(unet.attn_processors) == processors  # only for the job's pass


def test_token_merging_round_trip_keeps_unmerged_tokens():
    from sdwebui.engine.speed.tome import bipartite_merge

    tokens = torch.randn(2, 16 * 12, 8)
    merge, unmerge = bipartite_merge(tokens, 16, 12, 40)
    merged = merge(tokens)
    assert merged.shape == (2, 16 * 12 - 40, 8)
    back = unmerge(merged)
    kept = (back == tokens).all(-1).sum(-1)
    assert back.shape == tokens.shape and bool((kept >= 16 * 12 - 2 * 40).all())


def test_compile_setting_compiles_in_place_and_back(tiny_model_factory):
    from sdwebui.engine.speed.compiled import is_compiled, set_compiled

    unet = tiny_model_factory("sd1").unet
    set_compiled(unet, True, "eager")  # lazy: nothing is traced before the first call
    assert is_compiled(unet)
    set_compiled(unet, True, "eager")
    set_compiled(unet, False)
    assert not is_compiled(unet)


@pytest.mark.slow
def test_compiled_unet_does_not_recompile_across_steps_or_jobs(tiny_model_factory):
    import torch._dynamo
    from torch._dynamo.utils import counters

    from sdwebui.engine.speed.compiled import compiled_frames

    model = tiny_model_factory("sd1")
    torch._dynamo.reset()
    counters.clear()
    _, plain = run_counting_rows(model)
    compiled = SpeedSettings(compile=True, compile_backend="eager")
    _, first = run_counting_rows(model, speed=compiled)  # 6 steps: compiled on the first (the warm-up)
    assert compiled_frames() == 1
    _, second = run_counting_rows(model, speed=compiled)
    assert compiled_frames() == 1 and not counters["recompiles"]
    assert np.array_equal(pixels(first), pixels(plain)) and np.array_equal(pixels(second), pixels(plain))


def tiny_transformer():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        guidance_embeds=False,
        axes_dims_rope=(2, 2, 4),
    )


def test_step_cache_skips_the_later_blocks_of_a_transformer_when_the_first_changes_little(tiny_sd1_model):
    from sdwebui.engine.speed.step_cache import step_cache

    transformer, calls = tiny_transformer(), []
    transformer.single_transformer_blocks[-1].attn.register_forward_pre_hook(lambda m, a: calls.append(1))
    text = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(1))
    x = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(2))

    def steps() -> list[torch.Tensor]:
        return [
            transformer(
                hidden_states=x + 0.001 * s,
                encoder_hidden_states=text,
                pooled_projections=torch.zeros(1, 8),
                timestep=torch.tensor([1.0 - s / 10]),
                img_ids=torch.zeros(16, 3),
                txt_ids=torch.zeros(4, 3),
            ).sample
            for s in range(6)
        ]

    plain = steps()
    assert len(calls) == 6
    calls.clear()
    with step_cache(transformer, 0.5) as applied:
        cached = steps()
    assert applied and len(calls) == 1  # the first step computes every block; the next five reuse
    assert torch.allclose(cached[0], plain[0]) and not torch.allclose(cached[-1], plain[-1])
    calls.clear()
    steps()
    assert len(calls) == 6  # off again after the job
    with step_cache(tiny_sd1_model.unet, 0.5) as applied:  # a U-Net: not a DiT, left alone
        assert not applied
    _, result = run_counting_rows(tiny_sd1_model, speed=SpeedSettings(step_cache_threshold=0.2))
    assert "First block cache" not in result.images[0].infotext


def test_cudnn_benchmark_for_the_job(tiny_sd1_model):
    seen: list[bool] = []
    handle = tiny_sd1_model.unet.register_forward_pre_hook(
        lambda m, a: seen.append(torch.backends.cudnn.benchmark)
    )
    try:
        run_counting_rows(tiny_sd1_model, speed=SpeedSettings(cudnn_benchmark=True))
    finally:
        handle.remove()
    assert seen and all(seen) and not torch.backends.cudnn.benchmark
