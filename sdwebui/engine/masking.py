"""Mask and crop math for img2img/inpainting: pure PIL/numpy functions, no model.

Conventions: masks are mode "L", white (255) = repaint. Boxes are (x1, y1, x2, y2), x2/y2 exclusive.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

Box = tuple[int, int, int, int]

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE = range(4)
_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))  # (blur radius, repeats), coarse to fine


def to_mask(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Any image -> an "L" mask of `size`.

    Rule: an image with transparency uses its alpha channel (opaque = repaint, thresholded at 128, as A1111);
    otherwise its luminance (colours count by brightness). A mask of another size is stretched to `size`.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() != (255, 255):
            mask = alpha.point(lambda v: 255 if v > 128 else 0)
        else:
            mask = rgba.convert("L")
    else:
        mask = image.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.BILINEAR)  # no ringing outside the drawn area
    return mask


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """Gaussian blur with separate x/y standard deviations (A1111 mask_blur_x / mask_blur_y)."""
    if blur_x <= 0 and blur_y <= 0:
        return mask
    return mask.filter(ImageFilter.GaussianBlur((max(blur_x, 0), max(blur_y, 0))))


def is_empty(mask: Image.Image) -> bool:
    return mask.getbbox() is None


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """Bounding box of the mask's non-zero pixels grown by `padding` and clipped to the image; None if empty."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    width, height = mask.size
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, width), min(y2 + padding, height)


def expand_to_aspect(box: Box, target_w: int, target_h: int, image_w: int, image_h: int) -> Box:
    """Grow `box` along one axis to the aspect ratio target_w:target_h, shifting it to stay inside the image.

    When the image is too small in that axis, the box takes the whole axis (the aspect is then approximate).
    """
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    if width / height > target_w / target_h:
        y1, y2 = _grow(y1, y2, round(width * target_h / target_w), image_h)
    else:
        x1, x2 = _grow(x1, x2, round(height * target_w / target_h), image_w)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, wanted: int, limit: int) -> tuple[int, int]:
    wanted = min(max(wanted, hi - lo), limit)
    extra = wanted - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), hi


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes: just resize, crop and resize (cover + centre crop), resize and fill (fit + stretch
    the edges into the gaps); latent upscale resizes pixels like "just resize" (its latents are resized later).
    """
    if mode in (JUST_RESIZE, LATENT_UPSCALE):
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == CROP_AND_RESIZE:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode != RESIZE_AND_FILL:
        raise ValueError(f"unknown resize mode {mode}")
    ratio = min(width / image.width, height / image.height)
    inner_w, inner_h = max(round(image.width * ratio), 1), max(round(image.height * ratio), 1)
    inner = image.resize((inner_w, inner_h), Image.Resampling.LANCZOS)
    left, top = (width - inner_w) // 2, (height - inner_h) // 2
    right, bottom = width - left - inner_w, height - top - inner_h
    canvas = Image.new(inner.mode, (width, height))
    # stretch the outermost columns/rows of the image into the gaps
    strips = [
        ((0, 0, 1, inner_h), (left, inner_h), (0, top)),
        ((inner_w - 1, 0, inner_w, inner_h), (right, inner_h), (left + inner_w, top)),
        ((0, 0, inner_w, 1), (inner_w, top), (left, 0)),
        ((0, inner_h - 1, inner_w, inner_h), (inner_w, bottom), (left, top + inner_h)),
    ]
    for source, size, position in strips:
        if size[0] > 0 and size[1] > 0:
            canvas.paste(inner.crop(source).resize(size), position)
    canvas.paste(inner, (left, top))
    return canvas


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": replace masked pixels by progressively less blurred surrounding colours."""
    keep = ImageOps.invert(mask.convert("L"))
    visible = Image.new("RGBa", image.size)
    visible.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    result = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_PASSES:
        blurred = (
            visible.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
            if radius
            else visible.convert("RGBA")
        )
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def overlay(original: Image.Image, overlay_mask: Image.Image) -> Image.Image:
    """The original with alpha = 255 - mask: composited over a result, it restores every unmasked pixel."""
    image = original.convert("RGBA")
    image.putalpha(ImageOps.invert(overlay_mask.convert("L")))
    return image


def apply_overlay(result: Image.Image, overlay_image: Image.Image, paste_box: Box | None) -> Image.Image:
    """Composite a generated image over the original: paste the crop back (only masked), then the overlay."""
    if paste_box is not None:
        x1, y1, x2, y2 = paste_box
        base = Image.new("RGBA", overlay_image.size)
        base.paste(result.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        result = base
    composed = result.convert("RGBA")
    composed.alpha_composite(overlay_image)
    return composed.convert("RGB")


def latent_mask(mask: Image.Image, latent_w: int, latent_h: int) -> np.ndarray:
    """Mask downscaled to latent size and rounded to 0/1 (A1111 mask_round): [h, w] float32, 1 = repaint."""
    small = np.asarray(mask.convert("L").resize((latent_w, latent_h), Image.Resampling.BILINEAR), np.float32)
    return np.around(small / 255.0).astype(np.float32)
