"""The img2img tab: sub-tabs img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload, Batch; outpainting.

Masks drawn with the brush are the alpha of the editor's stroke layer: painted = repaint (white).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image, ImageChops

from sdwebui.config.resolve import RawImg2ImgFields
from sdwebui.engine.outpaint import OUTPAINT_MODES, outpaint_request
from sdwebui.engine.requests import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES, Img2ImgRequest
from sdwebui.extensions.bridge import ScriptControls
from sdwebui.jobs.queue import JobState
from webui.backend import UiBackend, describe_error
from webui.controlnet_ui import ControlNetControls, build_controlnet
from webui.extra_networks_ui import build_extra_networks
from webui.params import ParamControls, build_params_for
from webui.progress import error_html
from webui.prompt_row import PromptRow, build_prompt_row
from webui.results import ResultsPanel, build_results, failed, run_job
from webui.txt2img_tab import build_script_area, script_call, wire_tab
from webui.ui_config import UiConfig

TAB = "img2img"
MODES = ("img2img", "sketch", "inpaint", "inpaint_sketch", "inpaint_upload", "batch")
INPAINT_MODES = ("inpaint", "inpaint_sketch", "inpaint_upload")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
OUTPAINT_DIRECTIONS = ("left", "right", "up", "down")  # keyword names of engine.outpaint.outpaint


@dataclass
class Img2ImgTab:
    prompt_row: PromptRow
    params: ParamControls
    tabs: gr.Tabs
    init_image: gr.Image
    sketch: gr.ImageEditor
    inpaint: gr.ImageEditor
    denoising_strength: gr.Slider
    results: ResultsPanel
    mode: gr.State
    inpaint_controls: gr.Accordion
    inpaint_brush: gr.Number  # brush size for the inpaint editor's image (javascript/brush_size.js)
    controlnet: ControlNetControls | None = None

    def paste_fields(self) -> tuple:
        """The fields PNG Info pastes beyond the shared block and the denoising strength: ControlNet units."""
        return self.controlnet.paste_fields() if self.controlnet else ()

    def select_mode(self, name: str, outpaint: bool = False) -> tuple:
        """(mode, Inpaint settings update) for sub-tab `name`: the settings show on the masked modes, and
        while outpainting (its new area is inpainted with them)."""
        return name, gr.update(visible=name in INPAINT_MODES or bool(outpaint))


INPAINT_COLORS = ["#ffffff"]  # the mask brush


BRUSH_AT_512 = 24  # brush radius (image pixels) on a 512 px image; scaled to the image's smaller side


def brush_size(image_side: int) -> int:
    return max(2, round(image_side * BRUSH_AT_512 / 512))


def _editor(elem_id: str, colors: list[str], label: str) -> tuple[gr.ImageEditor, gr.Number]:
    editor = gr.ImageEditor(
        label=label,
        elem_id=elem_id,
        type="pil",
        image_mode="RGBA",
        sources=("upload", "clipboard"),
        brush=gr.Brush(
            colors=colors, default_size=BRUSH_AT_512, color_mode="fixed" if len(colors) == 1 else "defaults"
        ),
        transforms=(),
        layers=False,
        height=480,
    )
    # Gradio's front end keeps the brush size it started with (its "auto" is a fixed 25 px, a third of a
    # 64 px image) and ignores later brush updates; javascript/brush_size.js sets the editor's size slider
    # to this number when it changes
    size = gr.Number(
        BRUSH_AT_512, visible="hidden", elem_id=f"{elem_id}_brush_size", elem_classes="brush-size"
    )

    def scaled(value: dict | None):
        background = (value or {}).get("background")
        return brush_size(min(background.size)) if background is not None else gr.update()

    editor.upload(scaled, inputs=editor, outputs=size, show_progress="hidden", queue=False)
    return editor, size


def stroke_mask(editor_value: dict | None) -> Image.Image | None:
    """White where the user painted (any layer with alpha), black elsewhere; None when nothing drawn."""
    if not editor_value:
        return None
    background = editor_value.get("background")
    layers = [layer for layer in editor_value.get("layers") or [] if layer is not None]
    if background is None or not layers:
        return None
    mask = Image.new("L", background.size, 0)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        if alpha.size != mask.size:
            alpha = alpha.resize(mask.size)
        mask = ImageChops.lighter(mask, alpha)
    return mask if mask.getbbox() else None


def outpaint_from_ui(
    request: Img2ImgRequest, directions: list[str], pixels: int, mode: str
) -> Img2ImgRequest:
    """The request grown by `pixels` on the chosen sides (engine outpainting); the new area is inpainted."""
    if not directions:
        raise gr.Error("Outpainting: choose at least one direction.")
    unknown = sorted(set(directions) - set(OUTPAINT_DIRECTIONS))
    if unknown:
        raise gr.Error(
            f"Outpainting: unknown direction(s) {unknown}; choose from {list(OUTPAINT_DIRECTIONS)}"
        )
    sides = {side: int(pixels) if side in directions else 0 for side in OUTPAINT_DIRECTIONS}
    return outpaint_request(request, mode=mode, **sides)


SKETCH_COLORS = ["#000000", "#ffffff", "#cc3232", "#32cc70", "#3270cc"]


@dataclass
class _Sources:
    """The sub-tabs' inputs (one per mode, in MODES order for `tab_items`)."""

    tabs: gr.Tabs
    tab_items: list[gr.Tab]
    init_image: gr.Image
    sketch: gr.ImageEditor
    inpaint: gr.ImageEditor
    inpaint_brush: gr.Number
    inpaint_sketch: gr.ImageEditor
    upload_image: gr.Image
    upload_mask: gr.Image
    batch_input: gr.Textbox
    batch_output: gr.Textbox


@dataclass
class _InpaintControls:
    accordion: gr.Accordion
    mask_blur: gr.Slider
    mask_mode: gr.Radio
    masked_content: gr.Radio
    inpaint_area: gr.Radio
    padding: gr.Slider


@dataclass
class _OutpaintControls:
    enabled: gr.Checkbox
    directions: gr.CheckboxGroup
    pixels: gr.Slider
    fill: gr.Radio


@dataclass
class _Form:
    """Every input of the tab, read by `generate` from the values Gradio hands it."""

    prompt_row: PromptRow
    mode: gr.State
    sources: _Sources
    resize_mode: gr.Radio
    inpaint: _InpaintControls
    outpaint: _OutpaintControls
    params: ParamControls
    denoising: gr.Slider
    scripts: ScriptControls
    controlnet: ControlNetControls | None = None

    def inputs(self) -> set:
        src, inp, out = self.sources, self.inpaint, self.outpaint
        return {
            self.mode,
            self.prompt_row.prompt,
            self.prompt_row.negative_prompt,
            self.prompt_row.styles,
            *(src.init_image, src.sketch, src.inpaint, src.inpaint_sketch, src.upload_image, src.upload_mask),
            src.batch_input,
            src.batch_output,
            self.resize_mode,
            *(inp.mask_blur, inp.mask_mode, inp.masked_content, inp.inpaint_area, inp.padding),
            *(out.enabled, out.directions, out.pixels, out.fill),
            self.denoising,
            *self.scripts.inputs,
            *self.params.components(),
            *(self.controlnet.components() if self.controlnet else ()),
        }


def build_img2img_tab(backend: UiBackend, cfg: UiConfig) -> Img2ImgTab:
    prompt_row = build_prompt_row(TAB, backend)
    build_extra_networks(TAB, backend)  # the Lora / Textual Inversion cards
    mode = gr.State("img2img")
    with gr.Row(elem_id=f"{TAB}_extra_tabs", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=300):
            sources = _build_sources()
            resize_mode = cfg.make(
                TAB,
                gr.Radio,
                "Resize mode",
                choices=list(RESIZE_MODES),
                value=RESIZE_MODES[0],
                elem_id="resize_mode",
            )
            inpaint = _build_inpaint_controls(cfg)
            outpaint = _build_outpaint_controls(cfg)
            params = build_params_for(TAB, cfg, backend)
            denoising = cfg.make(
                TAB,
                gr.Slider,
                "Denoising strength",
                minimum=0.0,
                maximum=1.0,
                step=0.01,
                value=0.75,
                elem_id="img2img_denoising_strength",
            )
            controlnet = build_controlnet(TAB, backend, is_img2img=True)
            scripts = build_script_area(TAB, is_img2img=True)
        results = build_results(TAB, backend, lambda: backend.outputs_dir)
    form = _Form(
        prompt_row, mode, sources, resize_mode, inpaint, outpaint, params, denoising, scripts, controlnet
    )
    wire_tab(backend, prompt_row, params, results, _generator(backend, form, results), form.inputs())
    tab = Img2ImgTab(
        prompt_row,
        params,
        sources.tabs,
        sources.init_image,
        sources.sketch,
        sources.inpaint,
        denoising,
        results,
        mode,
        inpaint.accordion,
        sources.inpaint_brush,
        controlnet,
    )
    _wire_mode_switch(tab, sources, outpaint.enabled)
    return tab


def _build_sources() -> _Sources:
    with gr.Tabs(elem_id="mode_img2img") as tabs:
        with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as tab_img2img:
            init_image = gr.Image(label="Image for img2img", elem_id="img2img_image", type="pil", height=400)
        with gr.Tab("Sketch", id="sketch", elem_id="img2img_img2img_sketch_tab") as tab_sketch:
            sketch, _ = _editor("img2img_sketch", list(SKETCH_COLORS), "Sketch")
        with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as tab_inpaint:
            inpaint, inpaint_brush = _editor("img2maskimg", INPAINT_COLORS, "Image for inpainting with mask")
        with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id="img2img_inpaint_sketch_tab") as tab_isk:
            inpaint_sketch, _ = _editor("inpaint_sketch", list(SKETCH_COLORS), "Inpaint sketch")
        with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as tab_up:
            upload_image = gr.Image(label="Image", elem_id="img_inpaint_base", type="pil", height=300)
            upload_mask = gr.Image(
                label="Mask", elem_id="img_inpaint_mask", type="pil", image_mode="L", height=300
            )
        with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab") as tab_batch:
            batch_input = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
            batch_output = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
    return _Sources(
        tabs,
        [tab_img2img, tab_sketch, tab_inpaint, tab_isk, tab_up, tab_batch],
        init_image,
        sketch,
        inpaint,
        inpaint_brush,
        inpaint_sketch,
        upload_image,
        upload_mask,
        batch_input,
        batch_output,
    )


def _build_inpaint_controls(cfg: UiConfig) -> _InpaintControls:
    with gr.Accordion("Inpaint settings", open=True, elem_id=f"{TAB}_inpaint_controls", visible=False) as box:
        mask_blur = cfg.make(
            TAB, gr.Slider, "Mask blur", minimum=0, maximum=64, step=1, value=4, elem_id="img2img_mask_blur"
        )
        mask_mode = cfg.make(
            TAB,
            gr.Radio,
            "Mask mode",
            choices=list(MASK_MODES),
            value=MASK_MODES[0],
            elem_id="img2img_mask_mode",
        )
        masked_content = cfg.make(
            TAB,
            gr.Radio,
            "Masked content",
            choices=list(MASKED_CONTENT),
            value=MASKED_CONTENT[1],
            elem_id="img2img_inpainting_fill",
        )
        inpaint_area = cfg.make(
            TAB,
            gr.Radio,
            "Inpaint area",
            choices=list(INPAINT_AREAS),
            value=INPAINT_AREAS[0],
            elem_id="img2img_inpaint_full_res",
        )
        padding = cfg.make(
            TAB,
            gr.Slider,
            "Only masked padding, pixels",
            minimum=0,
            maximum=256,
            step=4,
            value=32,
            elem_id="img2img_inpaint_full_res_padding",
        )
    return _InpaintControls(box, mask_blur, mask_mode, masked_content, inpaint_area, padding)


def _build_outpaint_controls(cfg: UiConfig) -> _OutpaintControls:
    with gr.Accordion("Outpainting", open=False, elem_id=f"{TAB}_outpainting"):
        enabled = gr.Checkbox(label="Outpaint", value=False, elem_id="img2img_outpaint_enable")
        directions = gr.CheckboxGroup(
            label="Outpainting direction",
            choices=list(OUTPAINT_DIRECTIONS),
            value=list(OUTPAINT_DIRECTIONS),
            elem_id="img2img_outpaint_directions",
        )
        pixels = cfg.make(
            TAB,
            gr.Slider,
            "Pixels to expand",
            minimum=8,
            maximum=256,
            step=8,
            value=128,
            elem_id="img2img_outpaint_pixels",
        )
        fill = cfg.make(
            TAB,
            gr.Radio,
            "Outpainting fill",
            choices=list(OUTPAINT_MODES),
            value=OUTPAINT_MODES[0],
            elem_id="img2img_outpaint_mode",
        )
    return _OutpaintControls(enabled, directions, pixels, fill)


def _image_and_mask(form: _Form, values: dict) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask of the selected sub-tab; gr.Error names what is missing."""
    src, current, outpainting = form.sources, values[form.mode], values[form.outpaint.enabled]
    if current == "img2img":
        image, mask = values[src.init_image], None
    elif current == "sketch":
        editor = values[src.sketch] or {}
        image, mask = editor.get("composite"), None
    elif current == "inpaint":
        editor = values[src.inpaint] or {}
        image, mask = editor.get("background"), stroke_mask(editor)
        if image is not None and mask is None and not outpainting:
            raise gr.Error("Inpaint: draw a mask on the image with the brush first.")
    elif current == "inpaint_sketch":
        editor = values[src.inpaint_sketch] or {}
        image, mask = editor.get("composite"), stroke_mask(editor)
    else:  # inpaint upload
        image, mask = values[src.upload_image], values[src.upload_mask]
        if image is not None and mask is None:
            raise gr.Error("Inpaint upload: upload a mask image too.")
    if image is None:
        raise gr.Error(f"{current}: upload an image first.")
    image = image.convert("RGB")
    if mask is not None:
        mask = mask.convert("L").resize(image.size)
    if outpainting:
        mask = None  # the engine masks the new area (_build_request)
    return image, mask


def _build_request(
    backend: UiBackend, form: _Form, values: dict, image: Image.Image, mask: Image.Image | None
) -> Img2ImgRequest:
    row, inp, out = form.prompt_row, form.inpaint, form.outpaint
    raw = RawImg2ImgFields(
        prompt=values[row.prompt] or "",
        negative_prompt=values[row.negative_prompt] or "",
        styles=list(values[row.styles] or []),
        init_images=[image],
        mask=mask,
        resize_mode=RESIZE_MODES.index(values[form.resize_mode]),
        denoising_strength=float(values[form.denoising]),
        mask_blur_x=int(values[inp.mask_blur]),
        mask_blur_y=int(values[inp.mask_blur]),
        inpainting_fill=MASKED_CONTENT.index(values[inp.masked_content]),
        inpaint_full_res=values[inp.inpaint_area] == INPAINT_AREAS[1],
        inpaint_full_res_padding=int(values[inp.padding]),
        inpainting_mask_invert=MASK_MODES.index(values[inp.mask_mode]),
        **form.params.request_fields(values),
    )
    request = backend.resolve(raw)  # the settings (Clip skip, noise multiplier...) as the API has them
    if values[out.enabled]:  # the canvas grows; the output has the canvas's size
        request = outpaint_from_ui(request, values[out.directions], values[out.pixels], values[out.fill])
    return form.controlnet.attach(request, values) if form.controlnet else request


def _generator(backend: UiBackend, form: _Form, results: ResultsPanel):
    """The Generate handler: a batch folder, or one job from the selected sub-tab's image and mask."""

    def build_request(values: dict, image: Image.Image, mask: Image.Image | None) -> Img2ImgRequest:
        return _build_request(backend, form, values, image, mask)

    def generate(values: dict):
        scripts = lambda: script_call(TAB, form.scripts, values)  # noqa: E731
        if values[form.mode] == "batch":
            src = form.sources
            yield from run_batch(
                backend,
                results,
                values[src.batch_input],
                values[src.batch_output],
                values,
                build_request,
                scripts,
            )
            return
        try:
            image, mask = _image_and_mask(form, values)
        except gr.Error as exc:
            yield failed(results, describe_error(exc))
            return
        yield from run_job(backend, results, lambda: build_request(values, image, mask), scripts)

    return generate


def _wire_mode_switch(tab: Img2ImgTab, sources: _Sources, outpaint_on: gr.Checkbox) -> None:
    """The selected sub-tab sets the mode; the Inpaint settings show on masked modes and while outpainting."""
    for tab_item, name in zip(sources.tab_items, MODES, strict=True):
        tab_item.select(
            lambda outpaint, n=name: tab.select_mode(n, outpaint),
            inputs=outpaint_on,
            outputs=[tab.mode, tab.inpaint_controls],
            show_progress="hidden",
            queue=False,
        )
    outpaint_on.change(
        lambda outpaint, current: tab.select_mode(current, outpaint),
        inputs=[outpaint_on, tab.mode],
        outputs=[tab.mode, tab.inpaint_controls],
        show_progress="hidden",
        queue=False,
    )


def run_batch(
    backend: UiBackend,
    panel: ResultsPanel,
    input_dir: str,
    output_dir: str,
    values: dict,
    build_request,
    build_script_call=None,
):
    """One queued job per image of the input folder; results saved to the output folder."""
    if not backend.dir_config_allowed:
        yield {
            panel.status: error_html(
                "Batch: folder paths are disabled on this server (--hide-ui-dir-config, or a public "
                "listener without --enable-insecure-extension-access)."
            )
        }
        return
    source = Path(input_dir or "").expanduser()
    if not input_dir or not source.is_dir():
        yield {panel.status: error_html(f"Batch: input directory {input_dir!r} does not exist.")}
        return
    target = Path(output_dir).expanduser() if output_dir else backend.outputs_dir / "img2img-batch"
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        yield {panel.status: error_html(f"Batch: no images in {input_dir}.")}
        return
    done = 0
    for path in files:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            job = backend.submit(
                build_request(values, image, None), build_script_call() if build_script_call else None
            )
        except Exception as exc:
            yield {panel.status: error_html(f"Batch: {path.name}: {describe_error(exc)}")}
            return
        yield {panel.task_id: job.id, panel.progress: f"<span>Batch image {done + 1}/{len(files)}</span>"}
        try:
            result = job.wait()
        except Exception as exc:
            yield {panel.status: error_html(f"Batch: {path.name}: {describe_error(exc)}"), panel.progress: ""}
            return
        for index, out in enumerate(result.pil_images):
            suffix = f"-{index}" if index else ""
            out.save(target / f"{path.stem}{suffix}.png")
        done += 1
        if job.state is JobState.DONE and result.interrupted:
            break
    yield {
        panel.progress: "",
        panel.task_id: "",
        panel.status: f"<span>Batch: {done} image(s) written to {html.escape(str(target))}</span>",
    }
