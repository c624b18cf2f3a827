"""Mask and crop math (sdwebui.engine.masking): pure functions, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdwebui.engine import masking


def mask_with(box, size=(100, 80)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


def test_crop_region_grows_by_padding_and_clips_at_borders():
    assert masking.crop_region(mask_with((40, 30, 50, 40)), 5) == (35, 25, 55, 45)
    assert masking.crop_region(mask_with((0, 0, 10, 10)), 5) == (0, 0, 15, 15)  # touching the top-left
    assert masking.crop_region(mask_with((90, 70, 100, 80)), 5) == (85, 65, 100, 80)  # bottom-right


def test_crop_region_tiny_and_empty_masks():
    assert masking.crop_region(mask_with((50, 50, 51, 51)), 0) == (50, 50, 51, 51)
    assert masking.crop_region(Image.new("L", (10, 10)), 4) is None


def test_padding_larger_than_image_gives_whole_image():
    assert masking.crop_region(mask_with((40, 30, 50, 40)), 500) == (0, 0, 100, 80)


@pytest.mark.parametrize(
    ("box", "target", "image", "expected"),
    [
        ((40, 30, 50, 40), (64, 32), (100, 80), (35, 30, 55, 40)),  # wider: grow x around the centre
        ((40, 30, 50, 40), (32, 64), (100, 80), (40, 25, 50, 45)),  # taller: grow y
        ((0, 0, 10, 10), (64, 32), (100, 80), (0, 0, 20, 10)),  # touching the left border: shifted inside
        ((90, 70, 100, 80), (32, 64), (100, 80), (90, 60, 100, 80)),  # touching the bottom border
        ((0, 0, 90, 10), (64, 64), (100, 20), (0, 0, 90, 20)),  # image too small: whole axis
    ],
)
def test_expand_to_aspect_stays_inside_the_image(box, target, image, expected):
    result = masking.expand_to_aspect(box, *target, *image)
    assert result == expected
    x1, y1, x2, y2 = result
    assert 0 <= x1 < x2 <= image[0] and 0 <= y1 < y2 <= image[1]
    assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]


def test_expand_to_aspect_hits_the_ratio_when_there_is_room():
    x1, y1, x2, y2 = masking.expand_to_aspect((10, 10, 17, 30), 512, 768, 200, 200)
    assert abs((x2 - x1) / (y2 - y1) - 512 / 768) < 0.05


@pytest.mark.parametrize("mode", range(4))
def test_resize_modes_sizes(mode):
    image = Image.new("RGB", (120, 40), (10, 200, 30))
    assert masking.resize_image(mode, image, 64, 48).size == (64, 48)


def test_resize_and_fill_stretches_edges_into_gaps():
    image = Image.new("RGB", (100, 50), (200, 10, 10))
    result = np.asarray(masking.resize_image(masking.RESIZE_AND_FILL, image, 64, 64))
    assert np.abs(result[0, 32].astype(int) - (200, 10, 10)).max() <= 2  # top gap filled, not black


@pytest.mark.parametrize("mode", range(3))
def test_facade_resize_image_is_the_engines(mode):
    from sdwebui.facade import images

    image = Image.new("RGB", (100, 50), (200, 10, 10))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 4), fill=(10, 10, 220))  # a blue top edge
    ours = np.asarray(images.resize_image(mode, image, 64, 64))
    assert np.array_equal(ours, np.asarray(masking.resize_image(mode, image, 64, 64)))
    if mode == masking.RESIZE_AND_FILL:  # the top margin is the stretched blue edge, not black
        assert ours[0, 32, 2] > 150 and ours[0, 32, 0] < 60


def test_crop_and_resize_keeps_the_centre():
    image = Image.new("RGB", (120, 40), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((50, 0, 69, 39), fill=(255, 255, 255))
    result = np.asarray(masking.resize_image(masking.CROP_AND_RESIZE, image, 40, 40))
    assert result[20, 20].min() > 200 and result[20, 0].max() < 50


def test_to_mask_uses_alpha_when_transparent_else_luminance():
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 255))
    mask = masking.to_mask(rgba, (8, 8))
    assert mask.getpixel((1, 1)) == 255 and mask.getpixel((0, 0)) == 0
    colours = Image.new("RGB", (4, 4), (255, 0, 0))
    assert masking.to_mask(colours, (8, 8)).size == (8, 8)
    assert masking.to_mask(colours, (8, 8)).getpixel((0, 0)) == 76  # ITU-R 601 luma of pure red


def test_blur_mask_is_separable():
    mask = mask_with((40, 30, 60, 50))
    only_x = np.asarray(masking.blur_mask(mask, 4, 0))
    assert only_x[20, 50] == 0 and only_x[40, 37] > 0  # spreads along x, not along y
    assert np.array_equal(np.asarray(masking.blur_mask(mask, 0, 0)), np.asarray(mask))


def test_fill_replaces_masked_pixels_with_surrounding_colour():
    image = Image.new("RGB", (64, 64), (0, 120, 240))
    ImageDraw.Draw(image).rectangle((24, 24, 39, 39), fill=(255, 0, 0))
    mask = mask_with((20, 20, 44, 44), (64, 64))
    filled = np.asarray(masking.fill(image, mask)).astype(int)
    assert np.abs(filled[32, 32] - (0, 120, 240)).max() <= 3
    assert np.array_equal(filled[:10], np.asarray(image)[:10])


def test_overlay_restores_unmasked_pixels_and_pastes_crop():
    original = Image.new("RGB", (100, 80), (10, 20, 30))
    mask = mask_with((40, 30, 60, 50))
    generated = Image.new("RGB", (32, 32), (250, 250, 250))
    out = np.asarray(masking.apply_overlay(generated, masking.overlay(original, mask), (30, 20, 70, 60)))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[35, 35]) == (10, 20, 30)
    assert tuple(out[40, 50]) == (250, 250, 250)


def test_latent_mask_rounds_to_binary():
    latent = masking.latent_mask(mask_with((16, 16, 48, 48), (64, 64)), 8, 8)
    assert latent.shape == (8, 8) and set(np.unique(latent)) == {0.0, 1.0}
    assert latent[2:6, 2:6].all() and latent.sum() == 16
