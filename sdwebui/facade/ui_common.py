"""A1111's `modules.ui_common`: the small UI helpers extensions build their tabs with."""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdwebui.config import paths as _paths
from sdwebui.facade import shared
from sdwebui.facade.ui_components import ToolButton

folder_symbol = "\U0001f4c2"  # 📂
refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """Escaped lines joined by <br> in one <p> (A1111)."""
    content = "<br>\n".join(html.escape(line) for line in (text or "").split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(
    refresh_component: Any, refresh_method: Callable[[], Any], refreshed_args: Any, elem_id: str | None
) -> gr.Button:
    """A 🔄 button: calls `refresh_method()`, then updates the component(s) with `refreshed_args` (a dict,
    or a function returning one, e.g. `lambda: {"choices": new_list}`)."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = next((c.label for c in components if getattr(c, "label", None)), None)

    def refresh() -> Any:
        refresh_method()
        args = (refreshed_args() if callable(refreshed_args) else refreshed_args) or {}
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id, elem_classes=["refresh"])
    button.click(fn=refresh, inputs=[], outputs=components, api_name=False)
    if label:
        button.label = f"{label}: refresh"
    return button


@dataclass
class OutputPanel:
    gallery: Any = None
    generation_info: Any = None
    infotext: Any = None
    html_log: Any = None
    button_upscale: Any = None


def create_output_panel(tabname: str, outdir: str | None = None, toprow: Any = None) -> OutputPanel:
    """A result gallery with its hidden generation info, the infotext and a log area (A1111's layout)."""
    with gr.Column(elem_id=f"{tabname}_results"):
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4)
        generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
        infotext = gr.HTML(elem_id=f"html_info_{tabname}", elem_classes="infotext")
        html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes="html-log")
    return OutputPanel(gallery, generation_info, infotext, html_log, None)


def _gallery_path(item: Any) -> str | None:
    """A gallery value's file: (path, caption), {"name"/"path": ...} or {"image": {"path": ...}}, or a path."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image", item)
        item = item.get("path") or item.get("name") if isinstance(item, dict) else item
    return str(item) if item else None


def save_files(js_data: str, images: list[Any], do_make_zip: bool, index: int) -> tuple[Any, str]:
    """A1111's Save button: copies the gallery's images (only the selected one with `save_selected_only`)
    into the `outdir_save` folder, adds a row per image to its log.csv, optionally zips them; returns the
    files for a gr.File and an HTML note."""
    data = json.loads(js_data) if js_data else {}
    folder = _paths.resolve_output_dir(shared.opts.get("outdir_save", "log/images"), _paths.data_path)
    folder.mkdir(parents=True, exist_ok=True)
    first = int(data.get("index_of_first_image", 0))
    if index > -1 and shared.opts.get("save_selected_only", True) and index >= first:
        images, first = [images[index]], 0
    saved: list[str] = []
    log_file = folder / "log.csv"
    new_log = not log_file.exists()
    with open(log_file, "a", encoding="utf8", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename",
                             "negative_prompt"])  # fmt: skip
        for number, item in enumerate(images[first:] if first else images):
            source = _gallery_path(item)
            if source is None or not os.path.isfile(source):
                continue
            target = folder / os.path.basename(source)
            stem, suffix, n = target.stem, target.suffix, 1
            while target.exists():
                target, n = folder / f"{stem}-{n}{suffix}", n + 1
            shutil.copy2(source, target)
            saved.append(str(target))
            seeds = data.get("all_seeds") or [data.get("seed", "")]
            writer.writerow([data.get("prompt", ""), seeds[min(number, len(seeds) - 1)], data.get("width", ""),
                             data.get("height", ""), data.get("sampler_name", ""), data.get("cfg_scale", ""),
                             data.get("steps", ""), target.name, data.get("negative_prompt", "")])  # fmt: skip
    if do_make_zip and saved:
        archive = folder / "images.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in saved:
                zipped.write(path, os.path.basename(path))
        saved.insert(0, str(archive))
    note = f"Saved: {os.path.basename(saved[-1]) if saved else 'nothing'}"
    return gr.update(value=saved, visible=True), plaintext_to_html(note)
