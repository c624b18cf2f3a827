"""The txt2img tab: prompt row, parameters, scripts (Script dropdown + alwayson scripts), results."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from sdwebui.config.resolve import RawFields
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.extensions.bridge import ScriptControls, script_controls
from sdwebui.services import ScriptCall
from webui.backend import UiBackend
from webui.controlnet_ui import ControlNetControls, build_controlnet
from webui.extra_networks_ui import build_extra_networks
from webui.params import HiresControls, ParamControls, build_hires, build_params_for
from webui.prompt_row import PromptRow, build_prompt_row, wire_generate
from webui.refiner import RefinerControls, build_refiner
from webui.results import LastResult, ResultsPanel, build_results, run_job, wire_controls
from webui.ui_config import UiConfig

TAB = "txt2img"


@dataclass
class Txt2ImgTab:
    prompt_row: PromptRow
    params: ParamControls
    scripts: ScriptControls
    results: ResultsPanel
    hires: HiresControls
    controlnet: ControlNetControls
    refiner: RefinerControls

    def paste_fields(self) -> tuple:
        """The tab's fields PNG Info pastes beyond the shared block: Hires. fix, Refiner, ControlNet units."""
        return (*self.hires.paste_fields(), *self.refiner.paste_fields(), *self.controlnet.paste_fields())


def build_script_area(tab: str, is_img2img: bool) -> ScriptControls:
    """The Script dropdown, its scripts' controls and the alwayson scripts (their ui() makes accordions)."""
    with gr.Column(elem_id=f"{tab}_script_container"):
        return script_controls(is_img2img)


def script_call(kind: str, controls: ScriptControls, values: dict) -> ScriptCall:
    """The tab's script values -> the ScriptCall the job queue runs (unknown script -> clear error)."""
    return ScriptCall(kind, **controls.call_fields([values[c] for c in controls.inputs]))


def build_txt2img_tab(backend: UiBackend, cfg: UiConfig) -> Txt2ImgTab:
    prompt_row = build_prompt_row(TAB, backend)
    build_extra_networks(TAB, backend)  # the Lora / Textual Inversion cards
    with gr.Row(elem_id=f"{TAB}_extra_tabs", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=300):
            params = build_params_for(TAB, cfg, backend)
            hires = build_hires(TAB, cfg, backend, params)
            refiner = build_refiner(TAB, cfg, backend)
            controlnet = build_controlnet(TAB, backend, is_img2img=False)
            scripts = build_script_area(TAB, is_img2img=False)
        results = build_results(TAB, backend, lambda: backend.outputs_dir)

    def build_request(values: dict) -> Txt2ImgRequest:
        raw = RawFields(
            prompt=values[prompt_row.prompt] or "",
            negative_prompt=values[prompt_row.negative_prompt] or "",
            styles=list(values[prompt_row.styles] or []),
            **params.request_fields(values),
            **hires.request_fields(values),
            **refiner.request_fields(values),
        )
        return controlnet.attach(backend.resolve(raw), values)

    def generate(values: dict):
        yield from run_job(
            backend, results, lambda: build_request(values), lambda: script_call(TAB, scripts, values)
        )

    inputs = {prompt_row.prompt, prompt_row.negative_prompt, prompt_row.styles, *params.components()}
    inputs |= set(hires.components()) | set(refiner.components()) | set(controlnet.components())
    inputs |= set(scripts.inputs)
    wire_tab(backend, prompt_row, params, results, generate, inputs)
    return Txt2ImgTab(prompt_row, params, scripts, results, hires, controlnet, refiner)


def wire_tab(backend: UiBackend, prompt_row: PromptRow, params: ParamControls, results: ResultsPanel, generate,
             inputs) -> None:  # fmt: skip
    """Generate (inputs -> the results panel), Interrupt / Skip and the seed buttons of one generation tab."""
    outputs = [
        results.gallery,
        results.progress,
        results.infotext,
        results.status,
        results.task_id,
        results.last,
    ]
    wire_generate(prompt_row, generate, inputs, outputs)
    wire_controls(backend, results, prompt_row.interrupt, prompt_row.skip)
    wire_reuse_seed(params, results)


def wire_reuse_seed(params: ParamControls, results: ResultsPanel) -> None:
    def reuse(last: LastResult):
        if not last.seeds:
            return gr.update()
        return last.seeds[min(last.selected, len(last.seeds) - 1)]

    params.reuse_seed_button.click(reuse, inputs=results.last, outputs=params.seed, show_progress="hidden")
