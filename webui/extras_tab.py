"""Extras tab: upscale one image by a factor or to a size with a plain resampler (Lanczos / Nearest)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from sdwebui.engine.upscaling import UPSCALERS, upscale
from sdwebui.outputs.infotext import png_info_with, read_infotext
from webui.backend import UiBackend, describe_error
from webui.progress import error_html
from webui.ui_config import UiConfig

TAB = "extras"


@dataclass
class ExtrasTab:
    image: gr.Image
    result: gr.Image


def build_extras_tab(backend: UiBackend, cfg: UiConfig) -> ExtrasTab:
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            image = gr.Image(label="Source", elem_id="extras_image", type="pil")
            with gr.Tabs():
                with gr.Tab("Scale by", id="scale_by") as scale_by_tab:
                    factor = cfg.make(
                        TAB,
                        gr.Slider,
                        "Resize",
                        minimum=1.0,
                        maximum=8.0,
                        step=0.05,
                        value=2.0,
                        elem_id="extras_upscaling_resize",
                    )
                with gr.Tab("Scale to", id="scale_to") as scale_to_tab:
                    with gr.Row():
                        width = cfg.make(
                            TAB,
                            gr.Number,
                            "Width",
                            value=512,
                            precision=0,
                            elem_id="extras_upscaling_resize_w",
                        )
                        height = cfg.make(
                            TAB,
                            gr.Number,
                            "Height",
                            value=512,
                            precision=0,
                            elem_id="extras_upscaling_resize_h",
                        )
            upscaler = cfg.make(
                TAB,
                gr.Dropdown,
                "Upscaler 1",
                choices=UPSCALERS,
                value="Lanczos",
                elem_id="extras_upscaler_1",
            )
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(min_width=280):
            result = gr.Image(
                label="Result", elem_id="extras_result", type="pil", format="png", interactive=False
            )
            status = gr.HTML(elem_id="extras_status")
    scale_mode = gr.State("scale_by")
    scale_by_tab.select(lambda: "scale_by", outputs=scale_mode, queue=False)
    scale_to_tab.select(lambda: "scale_to", outputs=scale_mode, queue=False)

    def do_upscale(source: Image.Image | None, mode: str, by: float, w: float, h: float, name: str):
        if source is None:
            return None, error_html("Extras: upload an image first.")
        try:
            scale = (int(w or 0), int(h or 0)) if mode == "scale_to" else float(by)
            out = upscale(source, scale, name)
        except Exception as exc:
            return None, error_html(describe_error(exc))
        folder = backend.extras_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{len(list(folder.glob('*.png'))):05d}.png"
        # the source's generation parameters (a sent result, an uploaded PNG) go with it, as in A1111
        parameters = read_infotext(source) or ""
        out.save(path, pnginfo=png_info_with(parameters))
        shown = f'<div class="infotext">{html.escape(parameters)}</div>' if parameters else ""
        return out, f"<span>{out.width}x{out.height}, saved to {html.escape(str(path))}</span>{shown}"

    run.click(
        do_upscale, inputs=[image, scale_mode, factor, width, height, upscaler], outputs=[result, status]
    )
    return ExtrasTab(image, result)
