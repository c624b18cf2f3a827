"""txt2img through the public entry `generate` on tiny random models (CPU, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.vae import NaNLatentsError

SIZE = 64


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a cat", negative_prompt="blurry", seed=42, steps=3, width=SIZE, height=SIZE)
    base.update(changes)
    return Txt2ImgRequest(sampler_name=base.pop("sampler_name", "Euler"), **base)


def run(model, req, ctx=None, hooks=None, **settings):
    settings.setdefault("save_images", False)
    return generate(model, req, ctx or JobContext(), EngineSettings(**settings), hooks)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_images_seeds_and_infotext(tiny_sd1_model):
    result = run(tiny_sd1_model, request(batch_size=2, n_iter=2), version="v1.2.3")
    assert len(result.images) == 4 and all(im.size == (SIZE, SIZE) for im in result.pil_images)
    assert result.seeds == [42, 43, 44, 45]
    assert result.prompts == ["a cat"] * 4
    info = result.infotexts[1]
    assert info.startswith("a cat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: ")
    assert "CFG scale: 7, Seed: 43" in info and "Seed: 43, Size: 64x64" in info and "Model: tiny-sd1" in info
    assert info.endswith("Version: v1.2.3")
    assert "Clip skip" not in info
    assert np.abs(pixels(result.images[0].image) - pixels(result.images[1].image)).mean() > 1


def test_unset_size_is_the_models_native_size(tiny_sd1_model):
    result = run(tiny_sd1_model, request(width=None, height=96))
    native = tiny_sd1_model.native_resolution
    assert result.images[0].image.size == (native, 96)
    assert (result.request.width, result.request.height) == (native, 96)
    assert f"Size: {native}x96" in result.infotexts[0]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_image_does_not_depend_on_batch_size(tiny_sd1_model, sampler):
    pair = run(tiny_sd1_model, request(batch_size=2, sampler_name=sampler))
    single = run(tiny_sd1_model, request(seed=43, sampler_name=sampler))
    assert np.abs(pixels(pair.images[1].image) - pixels(single.images[0].image)).max() <= 1


def test_same_seed_reproduces_and_random_seed_resolves(tiny_sd1_model):
    a = run(tiny_sd1_model, request(sampler_name="Euler a"))
    b = run(tiny_sd1_model, request(sampler_name="Euler a"))
    assert np.array_equal(pixels(a.images[0].image), pixels(b.images[0].image))
    c = run(tiny_sd1_model, request(seed=-1, batch_size=2))
    assert c.seeds[0] >= 0 and c.seeds[1] == c.seeds[0] + 1


def test_progress_reports_every_step_with_previews(tiny_sd1_model):
    infos = []
    run(tiny_sd1_model, request(n_iter=2, steps=4), JobContext(on_step=infos.append), live_preview_every=2)
    assert [(i.job_no, i.step, i.steps) for i in infos] == [(j, s, 4) for j in range(2) for s in range(1, 5)]
    assert [i.latents is not None for i in infos[:4]] == [False, True, False, True]
    assert infos[1].latents.shape == (1, 4, SIZE // 8, SIZE // 8)


def test_interrupt_returns_decoded_current_batch(tiny_sd1_model):
    ctx = JobContext()
    ctx.on_step = lambda info: ctx.interrupt() if info.job_no == 1 and info.step == 2 else None
    result = run(tiny_sd1_model, request(n_iter=3, batch_size=2, steps=4), ctx)
    assert result.interrupted
    assert result.seeds == [42, 43, 44, 45]  # batch 0 finished, batch 1 decoded from its partial state
    assert len(result.images) == 4


def test_skip_drops_current_batch_and_continues(tiny_sd1_model):
    ctx = JobContext()
    ctx.on_step = lambda info: ctx.skip() if info.job_no == 0 and info.step == 1 else None
    result = run(tiny_sd1_model, request(n_iter=2, steps=3), ctx)
    assert not result.interrupted
    assert result.seeds == [43]
    full = run(tiny_sd1_model, request(seed=43, steps=3))
    assert np.array_equal(pixels(result.images[0].image), pixels(full.images[0].image))


def test_cfg_one_skips_uncond_and_batches_cond_with_uncond(tiny_sd1_model):
    rows = []
    hooks = EngineHooks(cfg_denoiser=lambda args: rows.append((args.x.shape[0], args.text_uncond is None)))
    run(tiny_sd1_model, request(batch_size=2, cfg_scale=1.0, steps=2), hooks=hooks)
    run(tiny_sd1_model, request(batch_size=2, cfg_scale=5.0, steps=2), hooks=hooks)
    assert rows == [(2, True)] * 2 + [(4, False)] * 2


def test_negative_prompt_changes_result(tiny_sd1_model):
    a = run(tiny_sd1_model, request(negative_prompt=""))
    b = run(tiny_sd1_model, request(negative_prompt="ugly, dark"))
    assert np.abs(pixels(a.images[0].image) - pixels(b.images[0].image)).mean() > 0.5


def test_prompt_editing_switches_conditioning(tiny_sd1_model):
    seen = []
    hooks = EngineHooks(cfg_denoiser=lambda args: seen.append(args.text_cond.clone()))
    run(tiny_sd1_model, request(prompt="[a cat:a dog:2]", steps=4), hooks=hooks)
    cat_dog = seen
    seen = []
    run(tiny_sd1_model, request(prompt="a cat", steps=1), hooks=hooks)
    run(tiny_sd1_model, request(prompt="a dog", steps=1), hooks=hooks)
    cat, dog = seen
    # A1111 counts sampler steps from 0 and switches after `end_at_step`: cat for steps 0..2, dog for step 3
    assert all(torch.equal(cat_dog[i], cat) for i in range(3))
    assert torch.equal(cat_dog[3], dog)


def test_and_composable_prompt_runs_all_parts_in_one_call(tiny_sd1_model):
    rows = []
    hooks = EngineHooks(cfg_denoiser=lambda args: rows.append(args.x.shape[0]))
    result = run(tiny_sd1_model, request(prompt="a cat AND a dog :0.5", steps=2), hooks=hooks)
    assert rows == [3, 3]  # uncond + two sub-prompts
    plain = run(tiny_sd1_model, request(prompt="a cat", steps=2))
    assert not np.array_equal(pixels(result.images[0].image), pixels(plain.images[0].image))


def test_hooks_rewrite_prompts_seeds_and_add_infotext(tiny_sd1_model):
    def process(state):
        state.all_prompts[1] = "a red house"
        state.all_seeds[1] = 7
        state.extra_generation_params["My ext"] = "on"

    calls = []
    hooks = EngineHooks(
        process=process,
        postprocess_image=lambda args: calls.append(("image", args.index)),
        postprocess=lambda args: calls.append(("done", len(args.result.images))),
    )
    result = run(tiny_sd1_model, request(batch_size=2), hooks=hooks)
    assert result.prompts == ["a cat", "a red house"] and result.seeds == [42, 7]
    assert result.infotexts[1].startswith("a red house\n") and "Seed: 7," in result.infotexts[1]
    assert "My ext: on" in result.infotexts[0]
    single = run(tiny_sd1_model, request(prompt="a red house", seed=7))
    assert np.abs(pixels(result.images[1].image) - pixels(single.images[0].image)).max() <= 1
    assert calls == [("image", 0), ("image", 1), ("done", 2)]


def test_saves_png_with_parameters(tiny_sd1_model, tmp_path):
    seen = []
    hooks = EngineHooks(image_saved=lambda args: seen.append(args.path))
    result = run(tiny_sd1_model, request(n_iter=2), hooks=hooks, save_images=True, outputs_root=tmp_path)
    assert len(result.saved_paths) == 2 and seen == result.saved_paths
    for path, info in zip(result.saved_paths, result.infotexts, strict=True):
        assert "txt2img-images" in path and path.startswith(str(tmp_path))
        with Image.open(path) as saved:
            assert saved.info["parameters"] == info
    nothing = run(tiny_sd1_model, request(do_not_save_samples=True), save_images=True, outputs_root=tmp_path)
    assert nothing.saved_paths == [] and nothing.images[0].saved_path is None


def test_one_record_per_image(tiny_sd1_model, tmp_path):
    def process(state):
        state.all_prompts[1] = "a dog"
        state.all_negative_prompts[1] = "ugly"

    req = request(batch_size=2, subseed=9, subseed_strength=0.25)
    result = run(
        tiny_sd1_model, req, hooks=EngineHooks(process=process), save_images=True, outputs_root=tmp_path
    )
    first, second = result.images
    assert (first.prompt, first.negative_prompt, second.prompt, second.negative_prompt) == (
        "a cat",
        "blurry",
        "a dog",
        "ugly",
    )
    assert (first.seed, first.subseed, second.seed, second.subseed) == (42, 9, 42, 10)  # A1111 variation rule
    assert (
        second.infotext.startswith("a dog\nNegative prompt: ugly\n")
        and "Variation seed: 10," in second.infotext
    )
    with Image.open(second.saved_path) as saved:
        assert saved.info["parameters"] == second.infotext
        assert np.array_equal(pixels(saved), pixels(second.image))
    assert result.seeds == [42, 42] and result.prompts == ["a cat", "a dog"]
    assert result.saved_paths == [first.saved_path, second.saved_path]


@pytest.mark.parametrize("family", ["sd2-v", "sdxl", "sdxl-refiner", "sd1-inpaint"])
def test_other_families_generate(tiny_model_factory, family):
    model = tiny_model_factory(family)
    result = run(model, request(sampler_name="DPM++ 2M", clip_skip=2 if family == "sd2-v" else 1))
    assert result.images[0].image.size == (SIZE, SIZE)
    assert np.asarray(result.images[0].image).std() > 0


def test_nan_latents_give_clear_error(tiny_sd1_model):
    def poison(args):
        args.x = args.x * float("nan")

    with pytest.raises(NaNLatentsError, match="U-Net: it ran in float32") as err:
        run(tiny_sd1_model, request(steps=1), hooks=EngineHooks(cfg_after_cfg=poison))
    assert "--no-half" not in str(err.value)  # the model is fp32: a half-precision hint would be false


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 60}, "width"),
        ({"steps": 0}, "steps"),
        ({"cfg_scale": 31}, "cfg_scale"),
        ({"batch_size": 65}, "batch_size"),
        ({"tiling": True}, "tiling"),
    ],
)
def test_bad_requests_name_the_field(tiny_sd1_model, changes, field):
    with pytest.raises(RequestError) as error:
        run(tiny_sd1_model, request(**changes))
    assert error.value.field == field


def test_unknown_sampler_lists_valid_names(tiny_sd1_model):
    with pytest.raises(ValueError, match="Euler a"):
        run(tiny_sd1_model, request(sampler_name="Eulerish"))


def test_unbalanced_brackets_are_literal(tiny_sd1_model):
    result = run(tiny_sd1_model, request(prompt="a (cat [dog", steps=1))
    assert result.prompts == ["a (cat [dog"]


def test_hooks_run_in_documented_order(tiny_sd1_model, tmp_path):
    from sdwebui.engine.requests import Img2ImgRequest

    order = []
    names = [
        "process",
        "process_batch",
        "before_sampling",
        "cfg_denoiser",
        "cfg_denoised",
        "cfg_after_cfg",
        "mask_blend",
        "postprocess_batch",
        "postprocess_image",
        "before_image_saved",
        "image_saved",
        "postprocess",
    ]
    hooks = EngineHooks(**{name: (lambda args, n=name: order.append(n)) for name in names})
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    req = Img2ImgRequest(
        prompt="a cat",
        seed=1,
        steps=2,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
        init_images=[Image.new("RGB", (SIZE, SIZE), (90, 40, 200))],
        mask=mask,
        denoising_strength=1.0,
    )
    run(tiny_sd1_model, req, hooks=hooks, save_images=True, outputs_root=tmp_path)
    step = ["cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "mask_blend"]
    assert order == names[:3] + step * 2 + names[7:]


def test_variation_seed_and_resize_from(tiny_sd1_model):
    base = run(tiny_sd1_model, request(steps=2))
    varied = run(tiny_sd1_model, request(steps=2, subseed=9, subseed_strength=0.5, batch_size=2))
    assert varied.seeds == [42, 42] and varied.subseeds == [9, 10]
    assert "Variation seed: 9, Variation seed strength: 0.5" in varied.infotexts[0]
    assert not np.array_equal(pixels(base.images[0].image), pixels(varied.images[0].image))
    resized = run(tiny_sd1_model, request(steps=2, seed_resize_from_w=128, seed_resize_from_h=64))
    assert "Seed resize from: 128x64" in resized.infotexts[0]
    assert not np.array_equal(pixels(base.images[0].image), pixels(resized.images[0].image))
