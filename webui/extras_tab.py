"""Extras tab: upscale one image by a factor or to a size (cropped), with a plain resampler or an upscaler
model (ESRGAN, RealESRGAN, ...), a second upscaler blended in; it runs as a job of the queue, as the API's."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from sdwebui.engine import face_restoration, upscaling
from sdwebui.extensions.bridge import ExtrasScriptControls, extras_script_controls
from sdwebui.models.face_restorers import CODEFORMER_LICENCE
from sdwebui.outputs.infotext import png_info_with, read_infotext
from sdwebui.services import NoPostprocessing
from webui import extras_batch
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
            with gr.Tabs():
                with gr.Tab("Single Image", id="extras_single", elem_id="extras_single_tab") as single_tab:
                    image = gr.Image(label="Source", elem_id="extras_image", type="pil")
                with gr.Tab(
                    "Batch from Directory", id="extras_batch", elem_id="extras_batch_tab"
                ) as batch_tab:
                    input_dir, output_dir = extras_batch.directory_fields()
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
            faces = _face_controls(cfg)
            with gr.Group(elem_id="extras_scripts"):
                script_controls = extras_script_controls()  # the extensions' Extras steps
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(min_width=280):
            result = gr.Image(
                label="Result", elem_id="extras_result", type="pil", format="png", interactive=False
            )
            status = gr.HTML(elem_id="extras_status")
    source_mode = _tab_state("single", [(single_tab, "single"), (batch_tab, "batch")])
    scale_mode = _tab_state("scale_by", [(scale_by_tab, "scale_by"), (scale_to_tab, "scale_to")])

    do_upscale = _upscale_handler(backend, script_controls)
    run.click(
        do_upscale,
        inputs=[
            source_mode,
            image,
            input_dir,
            output_dir,
            scale_mode,
            factor,
            width,
            height,
            upscaler,
            upscaler_2,
            visibility,
            crop,
            *faces,
            *script_controls.components,
        ],
        outputs=[result, status],
    )
    return ExtrasTab(image, result)


def _tab_state(initial: str, tabs: list[tuple[gr.Tab, str]]) -> gr.State:
    """A State holding the value of the selected tab among `tabs`."""
    state = gr.State(initial)
    for tab, value in tabs:
        tab.select(_constant(value), outputs=state, queue=False)
    return state


def _constant(value: str):
    return lambda: value


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


def _face_controls(cfg: UiConfig) -> list[gr.Slider]:
    """GFPGAN and CodeFormer visibility and CodeFormer's weight (A1111's), with CodeFormer's licence."""

    def slider(label: str, elem_id: str, value: float) -> gr.Slider:
        return cfg.make(
            TAB, gr.Slider, label, minimum=0.0, maximum=1.0, step=0.001, value=value, elem_id=elem_id
        )

    with gr.Accordion("Face restoration", open=False, elem_id="extras_face_restoration"):
        gfpgan = slider("GFPGAN visibility", "extras_gfpgan_visibility", 0.0)
        with gr.Row():
            codeformer = slider("CodeFormer visibility", "extras_codeformer_visibility", 0.0)
            weight = slider(
                "CodeFormer weight (0 = maximum effect, 1 = minimum effect)", "extras_codeformer_weight", 0.0
            )
        gr.HTML(
            f'<p class="extras-licence">{html.escape(CODEFORMER_LICENCE)}</p>',
            elem_id="extras_codeformer_licence",
        )
    return [gfpgan, codeformer, weight]


def _upscale_handler(backend: UiBackend, script_controls: ExtrasScriptControls):
    """The Generate button: one image (saved into the Extras folder with the source's parameters) or every
    image of a folder (extras_batch), through the upscalers, face restoration and the extensions' steps."""

    def do_upscale(source_mode: str, source, input_dir: str, output_dir: str, mode: str, *values):
        by, w, h, name, name_2, blend, crop_to_fit, gfpgan, codeformer, weight = values[:10]
        try:
            faces = face_restoration.plan_extras_faces(gfpgan, codeformer, weight, _restorers(backend))
            steps = getattr(backend.services, "postprocessing", None) or NoPostprocessing()
            step = steps.prepare(script_controls.call_args(list(values[10:])))
        except Exception as exc:
            return None, error_html(describe_error(exc))

        def process(image: Image.Image) -> Image.Image:
            size = (int(w or 0), int(h or 0))
            out = run_upscale(backend, image, mode, by, size, name, name_2, blend, crop_to_fit, faces)
            return step(out)[0]

        if source_mode == "batch":
            return extras_batch.run_directory(backend, input_dir, output_dir, process)
        if source is None:
            return None, error_html("Extras: upload an image first.")
        try:
            out = process(source)
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


def _restorers(backend: UiBackend) -> face_restoration.FaceRestorers | None:
    restorers = getattr(backend.services, "face_restorers", None)
    return restorers() if restorers is not None else None


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
    faces: face_restoration.ExtrasFaces | None = None,
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

    restorers = _restorers(backend)
    unload = bool(backend.services.options.get("face_restoration_unload", False))

    def work(ctx):
        upscaled = upscaling.upscale_extras(source, plan, models, ctx, upscaling.tile_progress(ctx))
        return face_restoration.restore_extras(
            upscaled, faces or face_restoration.ExtrasFaces(), restorers, unload
        )

    return backend.jobs.submit(work, kind="extras").wait()
