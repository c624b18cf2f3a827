"""Outpainting and sketch helpers, alone and through `generate`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdwebui.engine import masking
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.outpaint import inpaint_sketch, outpaint, outpaint_request, sketch_init
from sdwebui.engine.requests import Img2ImgRequest
from sdwebui.engine.settings import EngineSettings


def picture(width: int = 48, height: int = 40) -> Image.Image:
    x = np.linspace(30, 220, width, dtype=np.float32)[None, :]
    rgb = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.full((height, width), 120.0),
            np.broadcast_to(x[:, ::-1], (height, width)),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("mode", ["fill", "noise"])
def test_outpaint_canvas_has_original_in_place_and_mask_on_new_area(mode):
    image = picture()
    canvas = outpaint(image, left=8, right=0, up=4, down=12, mode=mode)
    assert canvas.image.size == (56, 56) and canvas.mask.size == (56, 56)
    assert np.array_equal(np.asarray(canvas.image)[4:44, 8:56], np.asarray(image))
    mask = np.asarray(canvas.mask)
    assert (mask[4:44, 8:56] == 0).all() and (mask[:4] == 255).all() and (mask[:, :8] == 255).all()
    new_area = np.asarray(canvas.image)[48:, 8:].astype(int)
    assert new_area.mean() > 20  # filled from the picture, not black


def test_noise_matched_variant_adds_texture_only_outside_the_original():
    image = picture()
    plain, noisy = outpaint(image, right=16), outpaint(image, right=16, mode="noise", seed=1)
    assert np.array_equal(np.asarray(noisy.image)[:, :48], np.asarray(image))
    assert (
        np.asarray(noisy.image)[:, 48:].astype(float).std()
        > np.asarray(plain.image)[:, 48:].astype(float).std()
    )


def test_overlap_reaches_into_the_original_edge():
    canvas = outpaint(picture(), left=8, overlap=4)
    assert (np.asarray(canvas.mask)[:, 8:12] == 255).all() and (np.asarray(canvas.mask)[:, 12:] == 0).all()


@pytest.mark.parametrize("kwargs", [{}, {"left": -1}, {"right": 4, "mode": "mirror"}])
def test_outpaint_bad_input(kwargs):
    with pytest.raises(ValueError, match="outpaint"):
        outpaint(picture(), **kwargs)


def test_outpainting_through_generate_keeps_original_pixels(tiny_sd1_model):
    image = picture(48, 56)
    base = Img2ImgRequest(
        prompt="a cat",
        seed=2,
        steps=2,
        sampler_name="Euler",
        init_images=[image],
        denoising_strength=0.9,
        mask_blur_x=2,
        mask_blur_y=2,
    )
    req = outpaint_request(base, left=16, down=8)
    assert (req.width, req.height) == (64, 64)
    result = generate(tiny_sd1_model, req, JobContext(), EngineSettings(save_images=False))
    out = np.asarray(result.images[0].image).astype(int)
    assert result.images[0].image.size == (64, 64)
    outside = np.asarray(masking.blur_mask(req.mask, 2, 2)) == 0
    assert outside[0:56, 16:64].sum() > 1000
    assert np.array_equal(out[outside], np.asarray(req.init_images[0]).astype(int)[outside])
    assert np.array_equal(out[4:44, 26:60], np.asarray(image).astype(int)[4:44, 10:44])


def test_sketch_helpers():
    image = picture(32, 32)
    strokes = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).rectangle((4, 4, 9, 9), fill=(255, 0, 0, 255))
    init = sketch_init(image, strokes)
    assert init.getpixel((5, 5)) == (255, 0, 0) and init.getpixel((20, 20)) == image.getpixel((20, 20))
    sketched, mask = inpaint_sketch(image, init)
    assert np.array_equal(np.asarray(mask) > 0, np.asarray(strokes)[..., 3] > 0)
    assert sketched.getpixel((5, 5)) == (255, 0, 0)
    with pytest.raises(ValueError, match="sketch"):
        inpaint_sketch(image, init.resize((16, 16)))
