"""Extras "Batch from Directory" (A1111's): every image of an input folder through the Extras steps, written
to an output folder (default: the Extras folder) under its own name. Folder paths are typed by the user, so
they are accepted only where the server allows folder paths in the UI at all (as img2img's batch:
--hide-ui-dir-config and public listeners without --enable-insecure-extension-access refuse them), and only
existing folders and image files are read."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from PIL import Image

from sdwebui.outputs.infotext import png_info_with, read_infotext
from webui.backend import UiBackend, describe_error
from webui.progress import error_html

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def directory_fields() -> tuple[gr.Textbox, gr.Textbox]:
    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir")
    output_dir = gr.Textbox(
        label="Output directory",
        placeholder="Leave blank to save images to the default path.",
        elem_id="extras_batch_output_dir",
    )
    return input_dir, output_dir


def _folders(backend: UiBackend, input_dir: str, output_dir: str) -> tuple[Path, Path]:
    """The checked (input, output) folders; ValueError with the message to show."""
    if not backend.dir_config_allowed:
        raise ValueError(
            "folder paths are disabled on this server (--hide-ui-dir-config, or a public listener without "
            "--enable-insecure-extension-access)"
        )
    if not input_dir or "\0" in input_dir or not Path(input_dir).expanduser().is_dir():
        raise ValueError(f"input directory {input_dir!r} does not exist")
    if "\0" in (output_dir or ""):
        raise ValueError(f"output directory {output_dir!r} is not a folder name")
    target = Path(output_dir).expanduser() if output_dir else backend.extras_dir()
    if target.exists() and not target.is_dir():
        raise ValueError(f"output directory {output_dir!r} is a file")
    return Path(input_dir).expanduser(), target


def run_directory(
    backend: UiBackend, input_dir: str, output_dir: str, process: Callable[[Image.Image], Image.Image]
) -> tuple[Image.Image | None, str]:
    """(the last result, the status HTML) after processing every image of `input_dir` in name order."""
    try:
        source, target = _folders(backend, input_dir, output_dir)
    except ValueError as error:
        return None, error_html(f"Extras batch: {error}.")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return None, error_html(f"Extras batch: no images in {html.escape(input_dir)}.")
    target.mkdir(parents=True, exist_ok=True)
    out = None
    for path in files:
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
            out = process(image)
        except Exception as exc:
            return out, error_html(f"Extras batch: {html.escape(path.name)}: {describe_error(exc)}")
        out.save(target / f"{path.stem}.png", pnginfo=png_info_with(read_infotext(image) or ""))
    written = f"{len(files)} image(s) written to {html.escape(str(target))}"
    return out, f"<span>Extras batch: {written}</span>"
