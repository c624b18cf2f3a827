"""Sample A1111-style extension used by the tests (written as community extensions are)."""

import gradio as gr

import modules.scripts as scripts
from modules import script_callbacks, shared
from modules.processing import StableDiffusionProcessing
from modules.shared import cmd_opts, opts


def on_ui_settings():
    section = ("sample_rewrite", "Sample rewrite")
    opts.add_option(
        "sample_rewrite_suffix", shared.OptionInfo("sfx", "Suffix appended to prompts", section=section)
    )


script_callbacks.on_ui_settings(on_ui_settings)
BASEDIR = scripts.basedir()  # A1111 extensions call it at import time to find their own files
SEEN_STEPS = []
LOADED_MODELS = []
script_callbacks.on_model_loaded(lambda sd_model: LOADED_MODELS.append(sd_model.sd_checkpoint_info.title))


def on_cfg_denoiser(params):
    SEEN_STEPS.append(params.sampling_step)


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)


class SampleRewrite(scripts.Script):
    def title(self):
        return "Sample rewrite"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Sample rewrite", open=False):
            enabled = gr.Checkbox(value=True, label="Enabled", elem_id=self.elem_id("enabled"))
            tag = gr.Textbox(value="tag", label="Tag")
        return [enabled, tag]

    def process(self, p: StableDiffusionProcessing, enabled, tag):
        if not enabled:
            return
        p.all_prompts = [
            f"{x} {tag}-{seed} {opts.sample_rewrite_suffix}"
            for x, seed in zip(p.all_prompts, p.all_seeds, strict=True)
        ]
        p.extra_generation_params["Sample rewrite"] = tag + ("+flag" if cmd_opts.sample_ext_flag else "")


class StateProbe(scripts.Script):
    """Records shared.state while images are post-processed (progress mirrored from the job)."""

    seen = []

    def title(self):
        return "State probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def postprocess_image(self, p, pp, *args):
        StateProbe.seen.append((shared.state.job, shared.state.sampling_step, shared.state.sampling_steps))
