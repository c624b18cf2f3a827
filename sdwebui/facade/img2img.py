"""A1111's `modules.img2img`: `process_batch`, img2img over every image of a folder (the Batch tab)."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageOps

from sdwebui.facade import images, processing, shared

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _files(folder: str) -> list[str]:
    return [f for f in shared.listfiles(folder) if f.lower().endswith(IMAGE_EXTENSIONS)] if folder else []


def process_batch(p: Any, input_dir: str, output_dir: str, inpaint_mask_dir: str, args: Any = None,
                  to_scale: bool = False, scale_by: float = 1.0, use_png_info: bool = False,
                  png_info_props: Any = None, png_info_dir: Any = None) -> processing.Processed | None:  # fmt: skip
    """Run `p` on each image of `input_dir` (with the mask of the same name from `inpaint_mask_dir`), saving
    the results into `output_dir` under the input's name; returns the last `Processed`."""
    masks = {os.path.splitext(os.path.basename(m))[0]: m for m in _files(inpaint_mask_dir)}
    files = _files(input_dir)
    shared.state.job_count = len(files) * p.n_iter
    processed = None
    for index, path in enumerate(files):
        if shared.state.interrupted:
            break
        shared.state.job = f"{index + 1} out of {len(files)}"
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        p.init_images = [image] * p.batch_size
        if to_scale:
            p.width, p.height = int(image.width * scale_by), int(image.height * scale_by)
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in masks:
            p.image_mask = Image.open(masks[stem])
        processed = processing.process_images(p)
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            for number, result in enumerate(processed.images):
                name = stem if number == 0 else f"{stem}-{number}"
                images.save_image(result, output_dir, "", forced_filename=name, extension="png",
                                  info=processed.infotexts[number] if number < len(processed.infotexts) else None)  # fmt: skip
    return processed
