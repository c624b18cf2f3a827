"""What A1111's "Poor man's outpainting" and "Outpainting mk2" share here: their arguments checked, and p's init
image grown by the engine's outpainting (sdwebui.engine.outpaint: the new area filled, then inpainted).

A built-in, not dogfood: A1111's names map onto the engine's outpainting rather than re-implementing it.
"""

from __future__ import annotations

from modules import processing, scripts
from sdwebui.engine.outpaint import outpaint

DIRECTIONS = ("left", "right", "up", "down")


def check(title: str, p, pixels, mask_blur, directions) -> list[str]:
    if not p.init_images:
        raise scripts.ScriptArgsError(f"{title}: needs an init image")
    for label, value, hi in (("pixels to expand", pixels, 256), ("mask blur", mask_blur, 64)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
            raise scripts.ScriptArgsError(f"{title}: {label} must be between 0 and {hi}, got {value!r}")
    directions = [directions] if isinstance(directions, str) else list(directions or [])
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise scripts.ScriptArgsError(
            f"{title}: directions must be some of {list(DIRECTIONS)}, got {directions!r}"
        )
    if int(pixels) == 0:
        raise scripts.ScriptArgsError(f"{title}: pixels to expand must be more than 0")
    return directions


def run_outpainting(p, pixels: int, mask_blur: int, directions: list[str], mode: str, params: dict):
    """The init image grown on `directions` by `pixels` (to a multiple of 8), its new area inpainted."""
    processing.fix_seed(p)
    image = p.init_images[0].convert("RGB")
    sides = {side: int(pixels) if side in directions else 0 for side in DIRECTIONS}
    sides["right"] += -(image.width + sides["left"] + sides["right"]) % 8
    sides["down"] += -(image.height + sides["up"] + sides["down"]) % 8
    canvas = outpaint(image, mode=mode, overlap=int(mask_blur), seed=max(int(p.seed), 0), **sides)
    p.init_images, p.image_mask = [canvas.image], canvas.mask
    p.width, p.height = canvas.image.size
    p.mask_blur_x = p.mask_blur_y = int(mask_blur)
    p.inpainting_fill, p.inpaint_full_res, p.inpainting_mask_invert = 1, False, 0  # the canvas is pre-filled
    p.extra_generation_params = {**p.extra_generation_params, **params}
    return processing.process_images(p)
