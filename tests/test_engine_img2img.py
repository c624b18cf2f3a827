"""img2img and inpainting through `generate` on tiny random models (CPU, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sdwebui.engine import masking, vae
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import Img2ImgRequest, RequestError
from sdwebui.engine.settings import EngineSettings

SIZE = 64


def gradient_image(width: int = SIZE, height: int = SIZE) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(255, 0, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 90, np.float32),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def square_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


def request(**changes) -> Img2ImgRequest:
    base = dict(
        prompt="a cat",
        seed=3,
        steps=4,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
        init_images=[gradient_image()],
        denoising_strength=0.5,
    )
    base.update(changes)
    return Img2ImgRequest(**base)


def run(model, req, ctx=None, hooks=None, **settings):
    settings.setdefault("save_images", False)
    return generate(model, req, ctx or JobContext(), EngineSettings(**settings), hooks)


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def round_trip(model, image: Image.Image) -> np.ndarray:
    pixels = vae.decode(model, vae.encode(model, vae.pil_to_pixels([image])))
    return arr(vae.pixels_to_pil(pixels)[0])


# -- img2img ------------------------------------------------------------------------------------------------
def test_strength_zero_returns_vae_round_trip(tiny_sd1_model):
    steps = []
    result = run(tiny_sd1_model, request(denoising_strength=0.0), JobContext(on_step=steps.append))
    assert steps == []
    assert np.array_equal(arr(result.images[0].image), round_trip(tiny_sd1_model, gradient_image()))
    assert "Denoising strength: 0.0" in result.infotexts[0]


def test_larger_strength_moves_further_from_init(tiny_sd1_model):
    reference = round_trip(tiny_sd1_model, gradient_image())
    distances = []
    for strength in (0.25, 0.5, 1.0):
        runs = [run(tiny_sd1_model, request(denoising_strength=strength, seed=s)) for s in (1, 2, 3)]
        distances.append(np.mean([np.abs(arr(r.images[0].image) - reference).mean() for r in runs]))
    assert distances[0] < distances[1] < distances[2], distances


@pytest.mark.parametrize(("fix", "expected"), [(False, 2), (True, 4)])
def test_steps_run_follow_strength_or_fix_setting(tiny_sd1_model, fix, expected):
    infos = []
    run(
        tiny_sd1_model,
        request(denoising_strength=0.5),
        JobContext(on_step=infos.append),
        img2img_fix_steps=fix,
    )
    assert len(infos) == expected and infos[-1].steps == expected


@pytest.mark.parametrize("mode", range(4))
def test_resize_modes_give_requested_size(tiny_sd1_model, mode):
    result = run(
        tiny_sd1_model, request(init_images=[gradient_image(96, 40)], resize_mode=mode, width=64, height=72)
    )
    assert result.images[0].image.size == (64, 72)


def test_batch_of_init_images_and_saving(tiny_sd1_model, tmp_path):
    images = [gradient_image(), gradient_image().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    result = run(
        tiny_sd1_model, request(init_images=images, batch_size=2), save_images=True, outputs_root=tmp_path
    )
    assert len(result.images) == 2 and all("img2img-images" in p for p in result.saved_paths)
    assert not np.array_equal(arr(result.images[0].image), arr(result.images[1].image))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"denoising_strength": 1.5}, "denoising_strength"),
        ({"init_images": []}, "init_images"),
        ({"init_images": [b"not an image"]}, "init_images[0]"),
        ({"init_images": [gradient_image()] * 3, "batch_size": 2}, "init_images"),
        ({"inpainting_fill": 7}, "inpainting_fill"),
        ({"mask": b"\x89PNG broken"}, "mask"),
    ],
)
def test_bad_img2img_requests(tiny_sd1_model, changes, field):
    with pytest.raises(RequestError) as error:
        run(tiny_sd1_model, request(**changes))
    assert error.value.field == field


# -- inpainting ---------------------------------------------------------------------------------------------
def test_unmasked_pixels_are_exactly_the_original(tiny_sd1_model):
    original = gradient_image()
    req = request(mask=square_mask((20, 20, 44, 44)), mask_blur_x=4, mask_blur_y=4, denoising_strength=0.9)
    result = run(tiny_sd1_model, req)
    blurred = np.asarray(masking.blur_mask(square_mask((20, 20, 44, 44)), 4, 4))
    outside = blurred == 0
    assert outside.sum() > 1000
    assert np.array_equal(arr(result.images[0].image)[outside], arr(original)[outside])
    inside = blurred == 255
    assert np.abs(arr(result.images[0].image)[inside] - arr(original)[inside]).mean() > 5
    info = result.infotexts[0]
    for text in (
        "Mask blur: 4",
        "Inpaint area: Whole picture",
        "Masked area padding: 32",
        "Masked content: original",
        "Mask mode: Inpaint masked",
    ):
        assert text in info


def test_only_masked_crops_and_pastes_back(tiny_sd1_model):
    original = gradient_image(128, 128)
    mask = square_mask((100, 4, 124, 20), (128, 128))  # touches nothing, near the top-right corner
    req = request(
        init_images=[original],
        mask=mask,
        inpaint_full_res=True,
        inpaint_full_res_padding=8,
        mask_blur_x=2,
        mask_blur_y=2,
        denoising_strength=0.9,
    )
    result = run(tiny_sd1_model, req)
    assert result.images[0].image.size == (128, 128)
    outside = np.asarray(masking.blur_mask(mask, 2, 2)) == 0
    assert np.array_equal(arr(result.images[0].image)[outside], arr(original)[outside])
    assert np.abs(arr(result.images[0].image)[8:16, 106:118] - arr(original)[8:16, 106:118]).mean() > 5
    assert "Inpaint area: Only masked" in result.infotexts[0]


def test_masked_content_modes_differ_inside_and_match_outside(tiny_sd1_model):
    first = {}
    for fill in range(4):
        hooks = EngineHooks(before_sampling=lambda args, f=fill: first.__setitem__(f, args.latents.clone()))
        run(
            tiny_sd1_model,
            request(
                mask=square_mask((16, 16, 48, 48)),
                mask_blur_x=0,
                mask_blur_y=0,
                inpainting_fill=fill,
                steps=1,
                denoising_strength=0.3,
            ),
            hooks=hooks,
        )
    inside = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    inside[..., 2:6, 2:6] = True
    inside = inside.expand(1, 4, 8, 8)
    for a in range(4):
        for b in range(a + 1, 4):
            assert torch.equal(first[a][~inside], first[b][~inside])
            assert (first[a][inside] - first[b][inside]).abs().mean() > 1e-3, (a, b)


def test_empty_mask_is_plain_img2img(tiny_sd1_model):
    plain = run(tiny_sd1_model, request())
    empty = run(tiny_sd1_model, request(mask=Image.new("L", (SIZE, SIZE), 0)))
    assert np.array_equal(arr(plain.images[0].image), arr(empty.images[0].image))


def test_inverted_mask_keeps_the_masked_square(tiny_sd1_model):
    original = gradient_image()
    result = run(
        tiny_sd1_model,
        request(
            mask=square_mask((16, 16, 48, 48)),
            inpainting_mask_invert=1,
            mask_blur_x=2,
            mask_blur_y=2,
            denoising_strength=0.9,
        ),
    )
    assert np.array_equal(arr(result.images[0].image)[24:40, 24:40], arr(original)[24:40, 24:40])
    assert "Mask mode: Inpaint not masked" in result.infotexts[0]


def test_mask_with_alpha_and_other_size_is_converted(tiny_sd1_model):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((8, 8, 23, 23), fill=(0, 0, 0, 255))  # opaque = repaint, colour ignored
    result = run(tiny_sd1_model, request(mask=rgba, mask_blur_x=0, mask_blur_y=0, denoising_strength=0.9))
    original = arr(gradient_image())
    assert np.array_equal(arr(result.images[0].image)[:12, :], original[:12, :])
    assert np.abs(arr(result.images[0].image)[20:44, 20:44] - original[20:44, 20:44]).mean() > 5


def test_inpainting_model_gets_mask_and_masked_image_channels(tiny_sd1_inpaint_model):
    conds = []
    hooks = EngineHooks(cfg_denoiser=lambda args: conds.append(args.image_cond))
    result = run(
        tiny_sd1_inpaint_model,
        request(
            mask=square_mask((16, 16, 48, 48)),
            mask_blur_x=0,
            mask_blur_y=0,
            batch_size=2,
            steps=2,
            denoising_strength=1.0,
        ),
        hooks=hooks,
    )
    assert conds[0].shape == (4, 5, 8, 8)
    assert torch.equal(conds[0][0, 0], torch.nn.functional.pad(torch.ones(4, 4), (2, 2, 2, 2)))
    assert "Conditional mask weight: 1.0" in result.infotexts[0]
