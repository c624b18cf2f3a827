"""A1111's "Poor man's outpainting" (img2img): arguments `[pixels, mask_blur, inpainting_fill, direction]`; the
engine's fill outpainting (A1111's "fill" / "original" content modes both start from the filled canvas)."""

from __future__ import annotations

import gradio as gr
from builtin_outpainting import DIRECTIONS, check, run_outpainting

from modules import scripts


class Script(scripts.Script):
    def title(self):
        return "Poor man's outpainting"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128)
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4)
        inpainting_fill = gr.Radio(label="Masked content", choices=["fill", "original", "latent noise", "latent nothing"],
                                   value="fill", type="index")  # fmt: skip
        direction = gr.CheckboxGroup(
            label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS)
        )
        return [pixels, mask_blur, inpainting_fill, direction]

    def run(self, p, pixels, mask_blur, inpainting_fill, direction):
        directions = check("Poor man's outpainting", p, pixels, mask_blur, direction)
        if inpainting_fill not in (0, 1, 2, 3):
            raise scripts.ScriptArgsError(
                f"Poor man's outpainting: masked content must be 0..3, got {inpainting_fill!r}"
            )
        params = {"Outpainting": "poor man's", "Outpaint pixels": int(pixels), "Outpaint directions": " ".join(directions)}  # fmt: skip
        return run_outpainting(p, int(pixels), int(mask_blur), directions, "fill", params)
