"""Outpainting and sketch helpers: they build the init image and mask that an Img2ImgRequest inpaints.

Outpainting ("poor man's"): the canvas grows by N pixels on any side; the new area is the mask and is
pre-filled either by the "fill" rule (progressively blurred surrounding colours) or, for the noise-matched
variant (the idea of A1111's "Outpainting mk2"), that fill plus Gaussian noise whose per-channel strength
matches the image's own fine detail, which gives the sampler texture to work from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from sdwebui.engine import masking
from sdwebui.engine.requests import Img2ImgRequest

OUTPAINT_MODES = ("fill", "noise")
ORIGINAL = 1  # Img2ImgRequest.inpainting_fill "original": the canvas is already filled


@dataclass
class OutpaintCanvas:
    image: Image.Image  # enlarged RGB image, original pasted at `offset`
    mask: Image.Image  # "L", white = the new area (+ `overlap` pixels into the original)
    offset: tuple[int, int]  # where the original's top-left corner is on the canvas


def outpaint(
    image: Image.Image,
    left: int = 0,
    right: int = 0,
    up: int = 0,
    down: int = 0,
    mode: str = "fill",
    overlap: int = 0,
    seed: int = 0,
) -> OutpaintCanvas:
    """Enlarge `image` by the given pixels per side; `overlap` lets the mask reach into the original's edge."""
    for name, value in (("left", left), ("right", right), ("up", up), ("down", down), ("overlap", overlap)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"outpaint: {name} must be a non-negative integer, got {value!r}")
    if left + right + up + down == 0:
        raise ValueError("outpaint: extend at least one side by one pixel or more")
    if mode not in OUTPAINT_MODES:
        raise ValueError(f"outpaint: mode must be one of {OUTPAINT_MODES}, got {mode!r}")
    image = image.convert("RGB")
    size = (image.width + left + right, image.height + up + down)
    canvas = Image.new("RGB", size)
    canvas.paste(image, (left, up))
    mask = Image.new("L", size, 255)
    keep = (
        left + (overlap if left else 0),
        up + (overlap if up else 0),
        left + image.width - (overlap if right else 0),
        up + image.height - (overlap if down else 0),
    )
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    new_area = Image.new("L", size, 255)
    new_area.paste(0, (left, up, left + image.width, up + image.height))
    filled = masking.fill(canvas, new_area)
    if mode == "noise":
        filled = _add_matched_noise(filled, image, new_area, seed)
    return OutpaintCanvas(filled, mask, (left, up))


def _add_matched_noise(filled: Image.Image, image: Image.Image, area: Image.Image, seed: int) -> Image.Image:
    detail = np.asarray(image, np.float32) - np.asarray(image.filter(ImageFilter.GaussianBlur(2)), np.float32)
    std = detail.reshape(-1, 3).std(axis=0) + 4.0  # a little noise even for flat images
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (filled.height, filled.width, 3)).astype(np.float32) * std
    inside = np.asarray(area, np.float32)[..., None] / 255.0
    pixels = np.asarray(filled, np.float32) + noise * inside
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def outpaint_request(
    request: Img2ImgRequest, left: int = 0, right: int = 0, up: int = 0, down: int = 0, mode: str = "fill"
) -> Img2ImgRequest:
    """The request with its first init image enlarged and masked; the output size is the canvas size.

    Sizes must be multiples of 8, so `right` and `down` grow by up to 7 extra pixels when needed.
    """
    if not request.init_images:
        raise ValueError("outpaint_request: the request needs an init image")
    image = request.init_images[0]
    right += -(image.width + left + right) % 8
    down += -(image.height + up + down) % 8
    canvas = outpaint(
        image, left, right, up, down, mode, overlap=request.mask_blur, seed=max(request.seed, 0)
    )
    return request.replace(
        init_images=[canvas.image],
        mask=canvas.mask,
        width=canvas.image.width,
        height=canvas.image.height,
        inpainting_fill=ORIGINAL,
        inpaint_full_res=False,
        inpainting_mask_invert=0,
    )


def sketch_init(image: Image.Image, strokes: Image.Image) -> Image.Image:
    """Sketch tab: colour strokes (RGBA, transparent elsewhere) drawn over the image -> the img2img init image."""
    if strokes.size != image.size:
        raise ValueError(f"sketch: strokes are {strokes.size}, the image is {image.size}")
    return Image.alpha_composite(image.convert("RGBA"), strokes.convert("RGBA")).convert("RGB")


def inpaint_sketch(original: Image.Image, sketched: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Inpaint sketch: (init image, mask) where the mask is every pixel the sketch changed."""
    if sketched.size != original.size:
        raise ValueError(f"inpaint sketch: the sketch is {sketched.size}, the original is {original.size}")
    sketched = sketched.convert("RGB")
    changed = np.asarray(sketched) != np.asarray(original.convert("RGB"))
    return sketched, Image.fromarray(changed.any(axis=2).astype(np.uint8) * 255, "L")
