"""PNG Info tab: drop an image, read its generation parameters, send them to txt2img / img2img."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from sdwebui.outputs.infotext import read_infotext


@dataclass
class PngInfoTab:
    image: gr.Image
    parameters: gr.Textbox
    send_to_txt2img: gr.Button
    send_to_img2img: gr.Button


def read_parameters(image: Image.Image | None) -> tuple[str, str]:
    """(infotext, HTML listing every text chunk). A1111 stores the infotext in the `parameters` chunk."""
    if image is None:
        return "", ""
    info = dict(getattr(image, "info", {}) or {})
    text = read_infotext(image) or ""
    rows = []
    for key, value in info.items():
        if isinstance(value, (str, int, float)):
            rows.append(
                f"<div><p><b>{html.escape(str(key))}</b></p><p>{html.escape(str(value)).replace(chr(10), '<br>')}</p></div>"
            )
    if not rows:
        rows.append("<div><p>No generation parameters found in this image.</p></div>")
    return text, "".join(rows)


def build_pnginfo_tab() -> PngInfoTab:
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            image = gr.Image(
                label="Source", elem_id="pnginfo_image", type="pil", sources=("upload", "clipboard")
            )
        with gr.Column(min_width=280):
            info_html = gr.HTML(elem_id="pnginfo_html")
            parameters = gr.Textbox(
                label="Parameters", elem_id="pnginfo_generation_info", lines=6, interactive=False
            )
            with gr.Row():
                send_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img", min_width=120)
                send_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img", min_width=120)
    image.change(read_parameters, inputs=image, outputs=[parameters, info_html], show_progress="hidden")
    return PngInfoTab(image, parameters, send_txt2img, send_img2img)
