"""Extras tab: upscale one image by a factor or to a size (cropped), with a plain resampler or an upscaler
model (ESRGAN, RealESRGAN, ...), a second upscaler blended in; it runs as a job of the queue, as the API's."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from sdwebui.engine import upscaling
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
                    crop = cfg.make(
                        TAB, gr.Checkbox, "Crop to fit", value=True, elem_id="extras_upscaling_crop"
                    )
            upscaler, upscaler_2, visibility = _upscaler_controls(backend, cfg)
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(min_width=280):
            result = gr.Image(
                label="Result", elem_id="extras_result", type="pil", format="png", interactive=False
            )
            status = gr.HTML(elem_id="extras_status")
    scale_mode = gr.State("scale_by")
    scale_by_tab.select(lambda: "scale_by", outputs=scale_mode, queue=False)
    scale_to_tab.select(lambda: "scale_to", outputs=scale_mode, queue=False)

    do_upscale = _upscale_handler(backend)
    run.click(
        do_upscale,
        inputs=[image, scale_mode, factor, width, height, upscaler, upscaler_2, visibility, crop],
        outputs=[result, status],
    )
    return ExtrasTab(image, result)


def _upscaler_controls(backend: UiBackend, cfg: UiConfig) -> tuple[gr.Dropdown, gr.Dropdown, gr.Slider]:
    """Upscaler 1 and 2 (plain resamplers and model files), the blend of 2, and the files that cannot be used."""
    names = upscaler_choices(backend)
    with gr.Row():
        upscaler = cfg.make(
            TAB,
            gr.Dropdown,
            "Upscaler 1",
            choices=names,
            value="Lanczos",
            elem_id="extras_upscaler_1",
        )
        upscaler_2 = cfg.make(
            TAB, gr.Dropdown, "Upscaler 2", choices=names, value="None", elem_id="extras_upscaler_2"
        )
    visibility = cfg.make(
        TAB,
        gr.Slider,
        "Upscaler 2 visibility",
        minimum=0.0,
        maximum=1.0,
        step=0.001,
        value=0.0,
        elem_id="extras_upscaler_2_visibility",
    )
    gr.HTML(broken_upscalers_html(backend), elem_id="extras_broken_upscalers")
    return upscaler, upscaler_2, visibility


def _upscale_handler(backend: UiBackend):
    """The Generate button: upscale, save into the Extras folder with the source's parameters, show where."""

    def do_upscale(
        source: Image.Image | None,
        mode: str,
        by: float,
        w: float,
        h: float,
        name: str,
        name_2: str,
        blend: float,
        crop_to_fit: bool,
    ):
        if source is None:
            return None, error_html("Extras: upload an image first.")
        try:
            out = run_upscale(
                backend, source, mode, by, (int(w or 0), int(h or 0)), name, name_2, blend, crop_to_fit
            )
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

    return do_upscale


def upscaler_choices(backend: UiBackend) -> list[str]:
    """None, Lanczos, Nearest and every usable upscaler model file."""
    return upscaling.upscaler_names(_models(backend))


def _models(backend: UiBackend) -> upscaling.ModelUpscalers | None:
    upscalers = getattr(backend.services, "upscalers", None)  # a UI over a bare services object has none
    return upscalers() if upscalers is not None else None


def broken_upscalers_html(backend: UiBackend) -> str:
    """The files of the upscaler folders that cannot be used, and why (nothing when all are fine)."""
    library = getattr(backend.services, "upscaler_library", None)
    broken = [e for e in library.entries() if not e.usable] if library is not None else []
    if not broken:
        return ""
    items = "".join(f"<li>{html.escape(backend.services.paths.redact(e.error or ''))}</li>" for e in broken)
    return f'<div class="extras-broken">Upscaler files that cannot be used:<ul>{items}</ul></div>'


def run_upscale(
    backend: UiBackend,
    source: Image.Image,
    mode: str,
    by: float,
    size: tuple[int, int],
    name: str,
    name_2: str,
    blend: float,
    crop: bool,
) -> Image.Image:
    """The Extras upscale as one job of the queue (the device is shared with generations; Interrupt stops it)."""
    models = _models(backend)
    upscaling.check_name(name or "None", models, "upscaler_1")
    upscaling.check_name(name_2 or "None", models, "upscaler_2")
    plan = upscaling.ExtrasPlan(
        upscaler_1=name or "None",
        upscaler_2=name_2 or "None",
        visibility_2=float(blend or 0.0),
        resize_mode=1 if mode == "scale_to" else 0,
        factor=float(by),
        size=size,
        crop=bool(crop),
    )
    upscaling.target_size(
        source, upscaling.extras_output_size(source, plan)
    )  # 4xx-style errors before queueing

    def work(ctx):
        return upscaling.upscale_extras(source, plan, models, ctx, upscaling.tile_progress(ctx))

    return backend.jobs.submit(work, kind="extras").wait()
