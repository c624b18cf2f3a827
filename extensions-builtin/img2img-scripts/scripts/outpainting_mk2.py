"""A1111's "Outpainting mk2" (img2img): arguments `[info, pixels, mask_blur, direction, noise_q, color_variation]`;
the engine's noise-matched outpainting (its noise follows the image's own fine detail, the idea of mk2's
noise_q / color_variation, which are checked and written to the infotext)."""

from __future__ import annotations

import gradio as gr
from builtin_outpainting import DIRECTIONS, check, run_outpainting

from modules import scripts


class Script(scripts.Script):
    def title(self):
        return "Outpainting mk2"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        info = gr.HTML(
            "<p>Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8</p>"
        )
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128)
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=8)
        direction = gr.CheckboxGroup(
            label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS)
        )
        noise_q = gr.Slider(
            label="Fall-off exponent (lower=higher detail)", minimum=0.0, maximum=4.0, step=0.01, value=1.0
        )
        color_variation = gr.Slider(label="Color variation", minimum=0.0, maximum=1.0, step=0.01, value=0.05)
        return [info, pixels, mask_blur, direction, noise_q, color_variation]

    def run(self, p, _, pixels, mask_blur, direction, noise_q, color_variation):
        directions = check("Outpainting mk2", p, pixels, mask_blur, direction)
        for label, value, hi in (("fall-off exponent", noise_q, 4), ("color variation", color_variation, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
                raise scripts.ScriptArgsError(
                    f"Outpainting mk2: {label} must be between 0 and {hi}, got {value!r}"
                )
        params = {
            "Outpainting": "mk2",
            "Outpaint pixels": int(pixels),
            "Outpaint directions": " ".join(directions),
        }
        return run_outpainting(p, int(pixels), int(mask_blur), directions, "noise", params)
