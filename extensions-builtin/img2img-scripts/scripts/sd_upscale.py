"""A1111's "SD upscale" (img2img): upscale the init image with an upscaler, then re-sample it tile by tile
(tiles of the Width x Height sliders, overlapping by "Tile overlap") and blend the tiles back together.

Dogfood: written only against the public extension API; ui() and run() arguments follow A1111's script
(`[info, overlap, upscaler_index, scale_factor]`; the API may name the upscaler instead of its index).
"""

from __future__ import annotations

import math

import gradio as gr
from PIL import Image

from modules import images, processing, scripts, shared
from modules.processing import Processed


def find_upscaler(upscaler_index):
    """The upscaler by index into shared.sd_upscalers, or by name (A1111's API accepts both)."""
    upscalers = list(shared.sd_upscalers)
    names = [u.name for u in upscalers]
    if isinstance(upscaler_index, str):
        lowered = [name.lower() for name in names]
        if upscaler_index.lower() not in lowered:
            raise scripts.ScriptArgsError(
                f"SD upscale: unknown upscaler {upscaler_index!r}; choose one of {names}"
            )
        return upscalers[lowered.index(upscaler_index.lower())]
    if (
        isinstance(upscaler_index, bool)
        or not isinstance(upscaler_index, int)
        or not 0 <= upscaler_index < len(names)
    ):
        raise scripts.ScriptArgsError(f"SD upscale: upscaler index must be 0..{len(names) - 1} of {names}")
    return upscalers[upscaler_index]


def check_args(p, overlap, scale_factor) -> None:
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, (int, float))
        or not 0 <= overlap < min(p.width, p.height)
    ):
        raise scripts.ScriptArgsError(
            f"SD upscale: tile overlap must be 0..{min(p.width, p.height) - 1}, got {overlap!r}"
        )
    if (
        isinstance(scale_factor, bool)
        or not isinstance(scale_factor, (int, float))
        or not 1 <= scale_factor <= 8
    ):
        raise scripts.ScriptArgsError(
            f"SD upscale: scale factor must be between 1 and 8, got {scale_factor!r}"
        )
    if not p.init_images:
        raise scripts.ScriptArgsError("SD upscale: needs an init image")


class Script(scripts.Script):
    def title(self):
        return "SD upscale"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        info = gr.HTML("<p>Will upscale the image by the selected scale factor; use width and height sliders to set tile size</p>")  # fmt: skip
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64, elem_id=self.elem_id("overlap"))  # fmt: skip
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                                 elem_id=self.elem_id("scale_factor"))  # fmt: skip
        names = [u.name for u in shared.sd_upscalers]
        upscaler_index = gr.Radio(label="Upscaler", choices=names, value=names[0], type="index",
                                  elem_id=self.elem_id("upscaler_index"))  # fmt: skip
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p, _, overlap, upscaler_index, scale_factor):
        check_args(p, overlap, scale_factor)
        upscaler = find_upscaler(upscaler_index)
        overlap = int(overlap)
        processing.fix_seed(p)
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler.name
        seed, init_img = p.seed, p.init_images[0].convert("RGB")
        img = upscaler.scaler.upscale(init_img, scale_factor) if upscaler.name != "None" else init_img
        if img.width < p.width or img.height < p.height:  # a tile must fit in the upscaled image
            img = img.resize((max(img.width, p.width), max(img.height, p.height)), Image.Resampling.LANCZOS)
        grid = images.split_grid(img, tile_w=p.width, tile_h=p.height, overlap=overlap)
        batch_size, upscale_count = p.batch_size, p.n_iter
        p.n_iter, p.do_not_save_grid = 1, True
        save, p.do_not_save_samples = not p.do_not_save_samples, True  # the tiles are not results
        work = [tile for _y, _h, row in grid.tiles for tile in row]
        batch_count = math.ceil(len(work) / batch_size)
        shared.state.job_count = batch_count * upscale_count
        result_images, initial_info = [], None
        for n in range(upscale_count):
            start_seed = p.seed = seed + n
            results = []
            for i in range(batch_count):
                if shared.state.interrupted:
                    break
                p.init_images = [tile[2] for tile in work[i * batch_size : (i + 1) * batch_size]]
                processed = processing.process_images(p)
                initial_info = initial_info or processed.info
                p.seed = processed.seed + 1
                results += processed.images
            for index, tile in enumerate(work):
                tile[2] = results[index] if index < len(results) else tile[2].resize((p.width, p.height))
            combined = images.combine_grid(grid)
            result_images.append(combined)
            if save and shared.opts.samples_save:
                images.save_image(combined, p.outpath_samples, "", start_seed, p.prompt, shared.opts.samples_format,
                                  info=initial_info, p=p)  # fmt: skip
        return Processed(
            p, result_images, seed, initial_info or "", infotexts=[initial_info or ""] * len(result_images)
        )
