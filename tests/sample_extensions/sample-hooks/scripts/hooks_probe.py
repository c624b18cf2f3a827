"""Sample A1111-style extension that probes the callbacks an extension relies on (used by the tests).

It records what it sees; `GET /sample-hooks/log` returns the record, so a test drives the real app over HTTP.
The "Sample hooks" script's Mode picks what the callbacks change in a job.
"""

import gradio as gr
import torch

import modules.scripts as scripts
from modules import script_callbacks, shared

LOG = {
    "model_loaded": [],  # checkpoint titles, per on_model_loaded
    "sd_model_in_process": [],  # shared.sd_model's title inside Script.process
    "extra_noise": [],  # shapes (noise, x, xi) per on_extra_noise
    "before_component": [],  # elem_ids, in call order
    "after_component": [],
    "after_prompt_label": None,  # the prompt box's label as after_component saw it (fully built)
    "script_after_component": {"txt2img": [], "img2img": []},  # Script.after_component, per tab
    "on_after_generate": [],  # Script.on_after_component(callback, elem_id="..._generate")
    "before_reload": 0,
}
MODE = ["off"]
MODES = ["off", "uncond as cond", "no extra noise"]


def on_model_loaded(sd_model):
    LOG["model_loaded"].append(sd_model.sd_checkpoint_info.title)


def on_cfg_denoiser(params):
    if MODE[0] == "uncond as cond":
        params.text_cond = params.text_uncond


def on_extra_noise(params):
    LOG["extra_noise"].append([list(params.noise.shape), list(params.x.shape), list(params.xi.shape)])
    if MODE[0] == "no extra noise":
        params.noise = torch.zeros_like(params.noise)


def on_before_component(component, **kwargs):
    elem_id = kwargs.get("elem_id")
    if elem_id:
        LOG["before_component"].append(elem_id)
    if elem_id == "txt2img_prompt":  # A1111 extensions put their own UI next to a known component
        gr.HTML("before the prompt", elem_id="sample_hooks_before_prompt")
    if elem_id == "sample_hooks_tab_box":  # a component of an on_ui_tabs tab (built outside the page)
        gr.HTML("before the tab's box", elem_id="sample_hooks_before_tab_box")


def on_after_component(component, **kwargs):
    elem_id = kwargs.get("elem_id")
    if elem_id:
        LOG["after_component"].append(elem_id)
    if elem_id == "txt2img_prompt":
        LOG["after_prompt_label"] = component.label
        gr.HTML("after the prompt", elem_id="sample_hooks_after_prompt")
    if elem_id == "sample_hooks_tab_box":
        LOG["after_tab_box_label"] = component.label
        gr.HTML("after the tab's box", elem_id="sample_hooks_after_tab_box")


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Column(elem_id="sample_hooks_tab_column"):
            gr.Textbox(label="Tab box", elem_id="sample_hooks_tab_box")
    return [(tab, "Sample hooks tab", "sample_hooks_tab")]


def on_before_reload():
    LOG["before_reload"] += 1


def on_app_started(demo, app):
    app.add_api_route("/sample-hooks/log", lambda: LOG, methods=["GET"])


script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_extra_noise(on_extra_noise)
script_callbacks.on_before_component(on_before_component)
script_callbacks.on_after_component(on_after_component)
script_callbacks.on_before_reload(on_before_reload)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)


class SampleHooks(scripts.Script):
    def __init__(self):
        self.on_after_component(self._generate_built, elem_id="txt2img_generate")

    def title(self):
        return "Sample hooks"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Dropdown(choices=MODES, value="off", label="Mode")]

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id"):
            LOG["script_after_component"][self.tabname].append(kwargs["elem_id"])

    def _generate_built(self, on_component):
        LOG["on_after_generate"].append(on_component.component.elem_id)

    def process(self, p, mode):
        MODE[0] = mode
        model = shared.sd_model
        LOG["sd_model_in_process"].append(model.sd_checkpoint_info.title if model is not None else None)

    def postprocess(self, p, processed, mode):
        MODE[0] = "off"
