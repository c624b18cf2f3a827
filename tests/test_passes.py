"""Sampling passes and stages through `generate`: a job with a second (img2img-over-latents) pass, progress
over both passes, the job-wide stage order giving the same images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.passes import SamplingPass
from sdwebui.engine.requests import Img2ImgRequest, JobLimits, RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings

SIZE = 64


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", negative_prompt="blurry", seed=42, steps=3, width=SIZE, height=SIZE)
    base.update(changes)
    return Txt2ImgRequest(sampler_name=base.pop("sampler_name", "Euler"), **base)


def second(**changes) -> SamplingPass:
    base = dict(width=SIZE, height=SIZE, steps=2, sampler_name="Euler", denoising_strength=0.5)
    base.update(changes)
    return SamplingPass(**base)


def run(model, req, ctx=None, hooks=None, **settings):
    settings.setdefault("save_images", False)
    return generate(model, req, ctx or JobContext(), EngineSettings(**settings), hooks)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_second_pass_runs_and_progress_counts_both(tiny_sd1_model):
    steps = []
    ctx = JobContext(
        on_step=lambda info: steps.append((info.step, info.steps, info.pass_index, info.pass_count))
    )
    seen = []  # (pass of the U-Net call, step within it) from the cfg hook
    hooks = EngineHooks(
        cfg_denoiser=lambda args: seen.append((args.sampling_step, args.total_sampling_steps))
    )
    two = run(tiny_sd1_model, request(extra_passes=[second()]), ctx=ctx, hooks=hooks)
    assert steps == [(1, 5, 0, 2), (2, 5, 0, 2), (3, 5, 0, 2), (4, 5, 1, 2), (5, 5, 1, 2)]
    assert seen == [(0, 3), (1, 3), (2, 3), (0, 2), (1, 2)]
    one = run(tiny_sd1_model, request())
    a, b = pixels(one.images[0].image), pixels(two.images[0].image)
    assert a.shape == b.shape and np.isfinite(b).all() and b.std() > 0
    assert np.abs(a - b).mean() > 0.5
    again = run(tiny_sd1_model, request(extra_passes=[second()]))
    assert np.array_equal(pixels(again.images[0].image), b)  # the second pass's noise comes from the seeds


def test_second_pass_strength_and_sampler_matter(tiny_sd1_model):
    low = run(tiny_sd1_model, request(extra_passes=[second(denoising_strength=0.3)]))
    high = run(tiny_sd1_model, request(extra_passes=[second(denoising_strength=0.9)]))
    other = run(tiny_sd1_model, request(extra_passes=[second(sampler_name="DPM++ 2M")]))
    base = run(tiny_sd1_model, request(extra_passes=[second()]))
    for result in (low, high, other):
        assert not np.array_equal(pixels(result.images[0].image), pixels(base.images[0].image))


def test_second_pass_at_its_own_size(tiny_sd1_model):
    result = run(tiny_sd1_model, request(extra_passes=[second(width=96, height=128)]))
    assert result.images[0].image.size == (96, 128)


def test_second_pass_after_img2img(tiny_sd1_model):
    init = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    req = Img2ImgRequest(
        prompt="a cat", seed=3, steps=4, width=SIZE, height=SIZE, sampler_name="Euler", init_images=[init]
    )
    steps = []
    ctx = JobContext(on_step=lambda info: steps.append((info.step, info.steps)))
    result = run(tiny_sd1_model, req.replace(extra_passes=[second(steps=2)]), ctx=ctx)
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # int(0.75 * 4) img2img steps, then 2
    plain = run(tiny_sd1_model, req)
    assert not np.array_equal(pixels(result.images[0].image), pixels(plain.images[0].image))


def test_job_stage_order_gives_the_same_images(tiny_sd1_model):
    order = []
    hooks = EngineHooks(
        process_batch=lambda args: order.append(("condition", args.batch_number)),
        before_sampling=lambda args: order.append(("sample", args.batch_number)),
        postprocess_batch=lambda args: order.append(("decode", args.batch_number)),
    )
    req = request(n_iter=2, batch_size=2, extra_passes=[second()])
    by_job = run(tiny_sd1_model, req, hooks=hooks, stage_order="job")
    assert order == [(stage, b) for stage in ("condition", "sample", "decode") for b in (0, 1)]
    order.clear()
    by_batch = run(tiny_sd1_model, req, hooks=hooks)
    assert order == [(stage, b) for b in (0, 1) for stage in ("condition", "sample", "decode")]
    assert by_job.seeds == by_batch.seeds == [42, 43, 44, 45]
    for a, b in zip(by_job.pil_images, by_batch.pil_images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_interrupt_in_the_second_pass_returns_its_estimate(tiny_sd1_model):
    ctx = JobContext()

    def on_step(info):
        if info.pass_index == 1:
            ctx.interrupt()

    ctx.on_step = on_step
    result = run(tiny_sd1_model, request(extra_passes=[second(steps=3, denoising_strength=1.0)]), ctx=ctx)
    assert result.interrupted and len(result.images) == 1
    assert pixels(result.images[0].image).std() > 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "extra_passes[0].steps"),
        ({"width": 100}, "extra_passes[0].width"),
        ({"denoising_strength": 1.5}, "extra_passes[0].denoising_strength"),
    ],
)
def test_bad_pass_names_the_field(tiny_sd1_model, changes, field):
    with pytest.raises(RequestError) as error:
        run(tiny_sd1_model, request(extra_passes=[second(**changes)]))
    assert error.value.field == field


def test_unknown_pass_sampler_fails_before_work(tiny_sd1_model):
    with pytest.raises(ValueError, match="Euler a"):
        run(tiny_sd1_model, request(extra_passes=[second(sampler_name="Eulerish")]))


def test_limits_count_the_passes():
    limits = JobLimits(steps=10, image_pixels=64 * 64)
    with pytest.raises(RequestError) as error:
        limits.check(request(extra_passes=[second(steps=20)]))
    assert error.value.field == "extra_passes[0].steps"
    with pytest.raises(RequestError) as error:
        limits.check(request(extra_passes=[second(width=128)]))
    assert error.value.field == "extra_passes[0].width"


def test_job_stage_order_uses_each_component_in_one_stretch(tiny_sd1_model):
    """By job, the text encoder runs only before the first U-Net call and the VAE decoder only after the last
    one, so a memory mode can move each component once per job (in before_stage)."""
    model = tiny_sd1_model
    used, stages_seen = [], []
    handles = [
        model.text_encoders[0].register_forward_hook(lambda *a: used.append("text")),
        model.unet.register_forward_hook(lambda *a: used.append("unet")),
        model.vae.decoder.register_forward_hook(lambda *a: used.append("vae")),
    ]

    def process(state):  # one prompt per batch, so that every batch needs the text encoder
        state.all_prompts[:] = ["a cat", "a dog", "a bird"]

    hooks = EngineHooks(
        process=process, before_stage=lambda args: stages_seen.append((args.stage, args.batch_numbers))
    )
    try:
        run(model, request(n_iter=3, extra_passes=[second()]), hooks=hooks, stage_order="job")
        by_job = list(used)
        used.clear()
        run(model, request(n_iter=3), hooks=hooks)
    finally:
        for handle in handles:
            handle.remove()
    runs = [name for i, name in enumerate(by_job) if i == 0 or by_job[i - 1] != name]
    assert runs == ["text", "unet", "vae"] and by_job.count("vae") == 3
    assert "text" in used[used.index("vae") :]  # by batch, batch 1 is encoded after batch 0's decode
    batches = [0, 1, 2]
    assert stages_seen[:3] == [("conditioning", batches), ("sampling", batches), ("decode", batches)]
    assert stages_seen[3:] == [(s, [b]) for b in batches for s in ("conditioning", "sampling", "decode")]


def test_unknown_stage_order_is_refused(tiny_sd1_model):
    with pytest.raises(ValueError, match="stage_order"):
        run(tiny_sd1_model, request(), stage_order="sometimes")
