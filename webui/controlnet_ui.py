"""The ControlNet accordion of txt2img and img2img (sd-webui-controlnet's layout and elem_ids, built in).

One tab per unit (`control_net_unit_count`, default 3): image (+ optional mask), the preprocessed map with
"Run preprocessor", the control type radio that filters modules and models, and every unit field. On
Generate the units go, in the extension's API dict form, through the same parser as
`alwayson_scripts.controlnet.args` (sdwebui.engine.controlnet.units.parse_units) into the request.
PNG Info pastes an infotext's `ControlNet N: "..."` entries back into unit N's fields (`paste_fields`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from sdwebui.engine.controlnet import prepare, preprocessors
from sdwebui.engine.controlnet.units import (
    ARGS_FIELD,
    ControlMode,
    HiResOption,
    ResizeMode,
    default_decoder,
    parse_infotext,
    parse_units,
    unit_fields_from_infotext,
)
from sdwebui.engine.errors import RequestError

DEFAULT_UNITS = 3


@dataclass
class UnitControls:
    """The components of one unit tab, named as the API unit's fields."""

    enabled: gr.Checkbox
    image: gr.Image
    mask: gr.Image
    module: gr.Dropdown
    model: gr.Dropdown
    weight: gr.Slider
    resize_mode: gr.Radio
    low_vram: gr.Checkbox
    processor_res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    pixel_perfect: gr.Checkbox
    control_mode: gr.Radio
    hr_option: gr.Radio
    # not unit fields: the UI around them
    control_type: gr.Radio = dataclasses.field(metadata={"ui": True})
    preview: gr.Image = dataclasses.field(metadata={"ui": True})
    run_preprocessor: gr.Button = dataclasses.field(metadata={"ui": True})
    status: gr.Markdown = dataclasses.field(metadata={"ui": True})
    # a pasted unit's preprocessor values: the module's change handler takes them instead of its defaults
    pasted: gr.State = dataclasses.field(metadata={"ui": True})

    def unit_components(self) -> list[gr.components.Component]:
        return [getattr(self, f.name) for f in fields(self) if not f.metadata.get("ui")]

    def api_dict(self, values: dict) -> dict[str, Any]:
        """The unit in the extension's API form (what a client would send in alwayson_scripts)."""
        unit = {f.name: values[getattr(self, f.name)] for f in fields(self) if not f.metadata.get("ui")}
        image, mask = unit.pop("image"), unit.pop("mask")
        unit["image"] = {"image": image, "mask": mask} if image is not None and mask is not None else image
        unit["module"] = _internal_module(unit["module"])
        return unit


@dataclass
class ControlNetControls:
    units: list[UnitControls]
    backend: Any

    def components(self) -> list[gr.components.Component]:
        return [c for unit in self.units for c in unit.unit_components()]

    def paste_fields(self) -> tuple:
        """(infotext key, component, reader) for webui.paste: unit i's fields from `ControlNet i`."""
        return tuple(
            (f"ControlNet {index}", getattr(unit, name), _reader(name, getattr(unit, name)))
            for index, unit in enumerate(self.units)
            for name in (*_PASTED, "enabled", "pasted")
        )

    def attach(self, request, values: dict):
        """`request` with the UI's units, parsed and checked as the API's (RequestError names args[i].field)."""
        raw = [unit.api_dict(values) for unit in self.units]
        if not any(item["enabled"] for item in raw):
            return request
        units = parse_units(raw, default_decoder())
        prepare.check_units(units, _store(self.backend))
        return dataclasses.replace(request, controlnet_units=units)


_PASTED = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
           "guidance_start", "guidance_end", "pixel_perfect", "control_mode")  # fmt: skip


def _reader(name: str, component: Any):
    """The value of field `name` in a pasted `ControlNet i` infotext; None keeps the component's."""

    def read(text: Any) -> Any:
        try:
            fields = unit_fields_from_infotext(parse_infotext(str(text)))
        except RequestError:
            return None
        if name == "enabled":
            return True
        if name == "pasted":  # for the module's change handler (wire_unit)
            return {key: fields[key] for key in ("module", "processor_res", "threshold_a", "threshold_b")}
        value = fields[name]
        if name == "module":
            return preprocessors.module_aliases().get(value, value)
        if name == "model":
            return _model_choice(
                str(value), [str(c[0] if isinstance(c, tuple) else c) for c in component.choices]
            )
        if name in ("processor_res", "threshold_a", "threshold_b") and value < 0:
            return None  # the module has no such slider
        return value

    return read


def _model_choice(title: str, choices: list[str]) -> str | None:
    """The listed model an infotext names: its full title, or the same name with another hash."""
    if title in choices:
        return title
    name = title.split(" [")[0]
    return next((c for c in choices if c.split(" [")[0] == name), None)


def _store(backend: Any):
    """The app's ControlNet models (sdwebui.models.controlnet.ControlNets), None when it has none."""
    return getattr(getattr(backend, "services", None), "controlnets", None)


def module_files(backend: Any) -> preprocessors.ModuleFiles:
    """Where the model-based modules find their weights (annotators, CLIP vision): what the engine sees."""
    return prepare.module_files(_store(backend)) or preprocessors.ModuleFiles()


def model_titles(backend: Any) -> list[str]:
    store = _store(backend)
    titles = list(store.library.titles()) if store is not None else []
    return ["None", *[t for t in titles if t != "None"]]


def _internal_module(name: str) -> str:
    """The UI lists alias labels (as the extension's dropdown); the API unit takes either, we send the key."""
    spec = preprocessors.find(name)
    return spec.name if spec is not None else name or "none"


def unit_count(backend: Any) -> int:
    try:
        count = int(backend.options.get("control_net_unit_count", DEFAULT_UNITS) or DEFAULT_UNITS)
    except (TypeError, ValueError):
        count = DEFAULT_UNITS
    return max(1, min(count, 10))


def build_controlnet(tab: str, backend: Any, is_img2img: bool) -> ControlNetControls:
    """The accordion `#<tab>_controlnet` with one tab per unit."""
    units = []
    with gr.Accordion("ControlNet", open=False, elem_id=f"{tab}_controlnet"):
        with gr.Tabs(elem_id=f"{tab}_controlnet_tabs"):
            for index in range(unit_count(backend)):
                with gr.Tab(f"ControlNet Unit {index}", elem_id=f"{tab}_controlnet_unit_{index}_tab"):
                    units.append(build_unit(f"{tab}_controlnet_unit_{index}", backend, is_img2img))
    return ControlNetControls(units, backend)


def build_unit(prefix: str, backend: Any, is_img2img: bool) -> UnitControls:
    files = module_files(backend)
    aliases = list(preprocessors.module_aliases(files).values())
    models = model_titles(backend)
    types = list(preprocessors.control_types(models, files))
    with gr.Row():
        image = gr.Image(label="Image", type="pil", image_mode="RGB", elem_id=f"{prefix}_input_image")
        preview = gr.Image(label="Preprocessor Preview", type="pil", interactive=False, format="png",
                           elem_id=f"{prefix}_generated_image")  # fmt: skip
    mask = gr.Image(label="Mask (optional: white = the masked part)", type="pil", image_mode="L",
                    elem_id=f"{prefix}_mask_image")  # fmt: skip
    with gr.Row():
        enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{prefix}_enable_checkbox")
        low_vram = gr.Checkbox(label="Low VRAM", value=False, elem_id=f"{prefix}_low_vram_checkbox")
        pixel_perfect = gr.Checkbox(
            label="Pixel Perfect", value=False, elem_id=f"{prefix}_pixel_perfect_checkbox"
        )
    control_type = gr.Radio(types, value="All", label="Control Type", elem_id=f"{prefix}_type_filter_radio")
    with gr.Row():
        module = gr.Dropdown(
            aliases, value="none", label="Preprocessor", elem_id=f"{prefix}_preprocessor_dropdown"
        )
        run = gr.Button("Run preprocessor 💥", elem_id=f"{prefix}_trigger_preprocessor")
        model = gr.Dropdown(models, value="None", label="Model", elem_id=f"{prefix}_model_dropdown")
    status = gr.Markdown("", elem_id=f"{prefix}_status")
    weight = gr.Slider(
        0.0, 2.0, value=1.0, step=0.05, label="Control Weight", elem_id=f"{prefix}_control_weight_slider"
    )
    start = gr.Slider(
        0.0,
        1.0,
        value=0.0,
        step=0.01,
        label="Starting Control Step",
        elem_id=f"{prefix}_start_control_step_slider",
    )
    end = gr.Slider(
        0.0,
        1.0,
        value=1.0,
        step=0.01,
        label="Ending Control Step",
        elem_id=f"{prefix}_ending_control_step_slider",
    )
    res = gr.Slider(
        64,
        2048,
        value=512,
        step=8,
        label="Preprocessor Resolution",
        visible=False,
        elem_id=f"{prefix}_preprocessor_resolution_slider",
    )
    thr_a = gr.Slider(
        0, 255, value=100, label="Threshold A", visible=False, elem_id=f"{prefix}_threshold_A_slider"
    )
    thr_b = gr.Slider(
        0, 255, value=200, label="Threshold B", visible=False, elem_id=f"{prefix}_threshold_B_slider"
    )
    control_mode = gr.Radio([m.value for m in ControlMode], value=ControlMode.BALANCED.value, label="Control Mode",
                            elem_id=f"{prefix}_control_mode_radio")  # fmt: skip
    resize_mode = gr.Radio([m.value for m in ResizeMode], value=ResizeMode.CROP_AND_RESIZE.value, label="Resize Mode",
                           elem_id=f"{prefix}_resize_mode_radio")  # fmt: skip
    hr_option = gr.Radio([o.value for o in HiResOption], value=HiResOption.BOTH.value, label="Hires-Fix Option",
                         visible=not is_img2img, elem_id=f"{prefix}_hr_option_radio")  # fmt: skip
    controls = UnitControls(enabled, image, mask, module, model, weight, resize_mode, low_vram, res, thr_a, thr_b,
                            start, end, pixel_perfect, control_mode, hr_option, control_type, preview, run, status,
                            gr.State(None))  # fmt: skip
    wire_unit(controls, backend)
    return controls


def slider_updates(module_label: str, pasted: dict | None = None) -> tuple[dict, dict, dict]:
    """The module's sliders (the extension's table): resolution, threshold A, threshold B, hidden when unused.
    Their values are the module's defaults, or those of a unit just pasted with this module."""
    # the spec, not a runnable module: one whose weights are missing still shows its sliders (it errors on run)
    spec = preprocessors.find(module_label)
    if spec is None:
        return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False)
    if pasted is None or _internal_module(module_label) != _internal_module(str(pasted.get("module", ""))):
        pasted = {}

    def update(slider: preprocessors.Slider | None, key: str) -> dict:
        if slider is None:
            return gr.update(visible=False)
        value = pasted.get(key)
        value = slider.value if value is None or value < 0 else value
        return gr.update(visible=True, label=slider.label, minimum=slider.minimum, maximum=slider.maximum,
                         step=slider.step, value=value)  # fmt: skip

    return (
        update(spec.resolution, "processor_res"),
        update(spec.slider_1, "threshold_a"),
        update(spec.slider_2, "threshold_b"),
    )


def filter_by_type(control_type: str, backend: Any) -> tuple[dict, dict]:
    """Control type radio -> the module and model dropdowns' choices and defaults (the extension's filter)."""
    files = module_files(backend)
    entry = preprocessors.control_types(model_titles(backend), files).get(control_type)
    if entry is None:
        return gr.update(), gr.update()
    return (
        gr.update(choices=entry["module_list"], value=entry["default_option"]),
        gr.update(choices=entry["model_list"], value=entry["default_model"]),
    )


def preview_map(backend: Any, module: str, image, mask, res: float, thr_a: float, thr_b: float):
    """ "Run preprocessor": the map the unit would use, or the error naming what is wrong."""
    if image is None:
        return None, "Upload an image first."
    files = module_files(backend)
    try:
        params = preprocessors.resolve_params(module, res, thr_a, thr_b, files)
        result = preprocessors.run_preprocessor(module, image, params, mask, files, field_name="module")
    except RequestError as error:
        return None, f"**Error:** {error}"
    return result, ""


def wire_unit(controls: UnitControls, backend: Any) -> None:
    sliders = [controls.processor_res, controls.threshold_a, controls.threshold_b]
    controls.module.change(
        lambda module, pasted: (*slider_updates(module, pasted), None),
        inputs=[controls.module, controls.pasted],
        outputs=[*sliders, controls.pasted],
        show_progress="hidden",
    )
    controls.control_type.change(lambda kind: filter_by_type(kind, backend), inputs=controls.control_type,
                                 outputs=[controls.module, controls.model], show_progress="hidden")  # fmt: skip
    controls.run_preprocessor.click(
        lambda *args: preview_map(backend, *args),
        inputs=[controls.module, controls.image, controls.mask, *sliders],
        outputs=[controls.preview, controls.status],
    )
    # uploading an image enables the unit, as the extension does
    controls.image.upload(lambda: True, outputs=controls.enabled, show_progress="hidden")
    controls.image.clear(lambda: None, outputs=controls.preview, show_progress="hidden")


__all__ = ["ARGS_FIELD", "ControlNetControls", "UnitControls", "build_controlnet"]
