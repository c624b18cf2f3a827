"""A1111's `modules.images` for extensions: `save_image`, `image_grid`, grid annotations, infotext reading.

A facade over `sdwebui.outputs.image_saving` (file naming and PNG chunks) and `sdwebui.outputs.infotext`; the
`on_before_image_saved` / `on_image_saved` callbacks run here as in A1111.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sdwebui.engine import masking
from sdwebui.engine.requests import RequestError
from sdwebui.facade import script_callbacks, shared
from sdwebui.outputs import image_saving
from sdwebui.outputs.filename_pattern import FilenameFields
from sdwebui.outputs.infotext import read_infotext

_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    return _UNSAFE.sub("_", text).strip(". ")[:128]


def save_image(
    image: Image.Image,
    path: str,
    basename: str = "",
    seed: int | None = None,
    prompt: str | None = None,
    extension: str = "png",
    info: str | None = None,
    short_filename: bool = False,
    no_prompt: bool = False,
    grid: bool = False,
    pnginfo_section_name: str = "parameters",
    p: Any = None,
    existing_info: dict | None = None,
    forced_filename: str | None = None,
    suffix: str = "",
    save_to_dirs: bool | None = None,
) -> tuple[str, str | None]:
    """Save `image` under `path` with the infotext `info`; returns (file path, None) as A1111 does."""
    if not path:
        raise ValueError("save_image: no output folder given")
    params = script_callbacks.ImageSaveParams(image, p, "", {pnginfo_section_name: info} if info else {})
    script_callbacks.before_image_saved_callback(params)
    image, info = params.image, params.pnginfo.get(pnginfo_section_name, info)
    directory = Path(path)
    ext = extension.lower().lstrip(".")
    if forced_filename:
        name = sanitize_filename_part(forced_filename, replace_spaces=False) or "image"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{name}.{ext}"
        image_saving._write(image, target, image_saving.FORMATS.get(ext, "PNG"), info)
    else:
        pattern = shared.opts.get("samples_filename_pattern", "[seed]") or "[seed]"
        if basename:
            pattern = f"{sanitize_filename_part(basename)}-{pattern}"
        if suffix:
            pattern += sanitize_filename_part(suffix) or ""
        fields = _filename_fields(int(seed or 0), prompt, p)
        target = image_saving.save_image(image, directory, fields.seed, info, ext, pattern, fields=fields)
    params.filename = str(target)
    script_callbacks.image_saved_callback(params)
    return str(target), None


def _filename_fields(seed: int, prompt: str | None, p: Any) -> FilenameFields:
    """The file-name tags' values an extension's save gives: its seed and prompt, the rest from `p`."""
    text = prompt if prompt is not None else str(getattr(p, "prompt", "") or "")
    return FilenameFields(
        seed=seed,
        prompt=text,
        prompt_no_styles=text,
        negative_prompt=str(getattr(p, "negative_prompt", "") or ""),
        styles=list(getattr(p, "styles", None) or []),
        steps=getattr(p, "steps", None),
        cfg_scale=getattr(p, "cfg_scale", None),
        width=getattr(p, "width", None),
        height=getattr(p, "height", None),
        sampler=str(getattr(p, "sampler_name", "") or ""),
        batch_size=int(getattr(p, "batch_size", 1) or 1),
        n_iter=int(getattr(p, "n_iter", 1) or 1),
    )


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """Images in a grid of `rows` rows (default: about square), cells sized to the largest image."""
    if not imgs:
        raise ValueError("image_grid: no images")
    if rows is None:
        n_rows = int(shared.opts.get("n_rows", -1))
        rows = n_rows if n_rows > 0 else (batch_size if n_rows == 0 else round(math.sqrt(len(imgs))))
    rows = max(1, min(rows, len(imgs)))
    cols = math.ceil(len(imgs) / rows)
    params = script_callbacks.ImageGridLoopParams(list(imgs), cols, rows)
    script_callbacks.image_grid_callback(params)
    w = max(img.size[0] for img in params.imgs)
    h = max(img.size[1] for img in params.imgs)
    grid = Image.new("RGB", (params.cols * w, params.rows * h), color="black")
    for i, img in enumerate(params.imgs):
        x = i % params.cols * w + (w - img.size[0]) // 2
        y = i // params.cols * h + (h - img.size[1]) // 2
        grid.paste(img, box=(x, y))
    return grid


@dataclass
class GridAnnotation:
    text: str = ""
    is_active: bool = True


def get_font(fontsize: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=fontsize)


def draw_grid_annotations(
    im: Image.Image,
    width: int,
    height: int,
    hor_texts: list[list[GridAnnotation]],
    ver_texts: list[list[GridAnnotation]],
    margin: int = 0,
) -> Image.Image:
    """Add column labels above and row labels left of a grid of `width` x `height` cells.

    As A1111: a label wider than its room is wrapped at spaces, and a line still too wide is drawn in a
    smaller font, so "CFG Scale: 1.0" over a 64 px cell is never cut off.
    """
    cols, rows = max(1, len(hor_texts)), max(1, len(ver_texts))
    fontsize = max(10, (width + height) // 25)
    line_spacing = fontsize // 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad_left = 0
    if sum(len(t) for t in ver_texts):
        widest = max(_text_size(probe, a.text, get_font(fontsize))[0] for t in ver_texts for a in t)
        pad_left = min(width * 3 // 4, widest + 2 * line_spacing)
    hor = [_fit_lines(probe, t, fontsize, width - line_spacing) for t in hor_texts]
    ver = [_fit_lines(probe, t, fontsize, pad_left - line_spacing) for t in ver_texts]

    def block_height(lines: list[_Line]) -> int:
        return sum(line.height + line_spacing for line in lines) + line_spacing

    pad_top = 0 if sum(len(t) for t in hor) == 0 else max(block_height(t) for t in hor) + line_spacing
    result = Image.new(
        "RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)), "white"
    )
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(hor):
        x = pad_left + (width + margin) * col + width / 2
        _draw_lines(draw, lines, x, pad_top / 2, line_spacing)
    for row, lines in enumerate(ver):
        y = pad_top + (height + margin) * row + height / 2
        _draw_lines(draw, lines, pad_left / 2, y, line_spacing)
    return result


@dataclass
class _Line:
    text: str
    font: Any
    height: int
    is_active: bool


def _fit_lines(probe, annotations: list[GridAnnotation], fontsize: int, allowed: int) -> list[_Line]:
    """Each annotation's text wrapped at spaces into `allowed` px; a line still wider gets a smaller font."""
    font = get_font(fontsize)
    lines = []
    for annotation in annotations:
        for text in _wrap(probe, annotation.text, font, allowed):
            size, line_font = fontsize, font
            while size > 1 and _text_size(probe, text, line_font)[0] > allowed:
                size -= 1
                line_font = get_font(size)
            lines.append(_Line(text, line_font, _text_size(probe, text, line_font)[1], annotation.is_active))
    return lines


def _wrap(probe, text: str, font: Any, allowed: int) -> list[str]:
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if _text_size(probe, joined, font)[0] <= allowed or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text or " ", font=font)
    return right - left, bottom - top


def _draw_lines(draw, lines: list[_Line], cx: float, cy: float, spacing: int) -> None:
    y = cy - sum(line.height + spacing for line in lines) / 2
    for line in lines:
        fill = (0, 0, 0) if line.is_active else (153, 153, 153)
        line_h = line.height + spacing
        draw.text((cx, y + line_h / 2), line.text, font=line.font, fill=fill, anchor="mm", align="center")
        y += line_h


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """(infotext, other PNG text items) as A1111 returns them."""
    items = {k: v for k, v in (image.info or {}).items() if isinstance(v, str) and k != "parameters"}
    return read_infotext(image), items


def resize_image(
    resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None
):
    """0: stretch, 1: crop to fill, 2: fit and stretch the edges into the rest (A1111 resize modes), Lanczos:
    the engine's own resize (sdwebui.engine.masking), so img2img and extensions agree. With `upscaler_name`
    an image that grows is first upscaled by that upscaler (as A1111), then fitted."""
    if (
        upscaler_name
        and upscaler_name not in ("None", "Lanczos")
        and (width > im.width or height > im.height)
    ):
        scale = max(width / im.width, height / im.height)
        found = next((u for u in shared.sd_upscalers if u.name == upscaler_name), None)
        if found is None:
            names = [u.name for u in shared.sd_upscalers]
            raise RequestError("script_args", f"unknown upscaler {upscaler_name!r}; available: {names}")
        im = found.scaler.upscale(im, scale, found.data_path)
    return masking.resize_image(resize_mode, im, width, height)


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """RGB, with transparent areas filled with `bgcolor` (A1111; `img2img_background_color` setting)."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


# -- A1111's tiles of an image with overlap (the SD upscale script) ------------------------------------------
@dataclass
class Grid:
    tiles: list  # [y, tile_h, [[x, tile_w, tile image], ...]] per row
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """A1111's split_grid: tiles of tile_w x tile_h covering the image, spread evenly, neighbours overlapping."""
    w, h = image.width, image.height
    cols = max(1, math.ceil((w - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((h - overlap) / (tile_h - overlap)))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        y = min(int(row * dy), h - tile_h) if h > tile_h else 0
        row_images = []
        for col in range(cols):
            x = min(int(col * dx), w - tile_w) if w > tile_w else 0
            row_images.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, row_images])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """A1111's combine_grid: the tiles pasted back, each overlap blended with a linear ramp."""
    overlap = grid.overlap
    ramp = np.arange(overlap, dtype=np.float32) * 255 / max(overlap, 1)
    mask_w = Image.fromarray(np.repeat(ramp[None, :], grid.tile_h, axis=0).astype(np.uint8), "L")
    mask_h = Image.fromarray(np.repeat(ramp[:, None], grid.image_w, axis=1).astype(np.uint8), "L")
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0 or overlap == 0:
                line.paste(tile, (x, 0))
                continue
            line.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w.crop((0, 0, overlap, h)))
            line.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0 or overlap == 0:
            combined.paste(line, (0, y))
            continue
        combined.paste(line.crop((0, 0, line.width, overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, overlap, line.width, h)), (0, y + overlap))
    return combined
