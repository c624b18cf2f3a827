"""Sample extension in the way of sd-dynamic-thresholding (used by the tests): in `process_batch` it registers
its own entry in `sd_samplers.all_samplers_map` whose constructor builds the original sampler and replaces
its `model_wrap_cfg` with a `CFGDenoiserKDiffusion` subclass overriding `combine_denoised`, points
`p.sampler_name` at it, and removes it again in `postprocess_batch`.
"""

import gradio as gr

from modules import script_callbacks, scripts, sd_samplers, sd_samplers_common
from modules.sd_samplers_kdiffusion import CFGDenoiserKDiffusion

MODES = ["off", "uncond only", "clamp"]


class SampleGuidanceCFG(CFGDenoiserKDiffusion):
    def __init__(self, sampler, mode, clamp):
        super().__init__(sampler)
        self.mode, self.clamp = mode, clamp

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        steps = self.p.extra_generation_params.setdefault("Sample guidance steps", [])
        steps.append(f"{self.step}/{self.total_steps}")
        if self.mode == "uncond only":  # guidance that ignores the prompt: the uncond estimate alone
            return x_out[-uncond.shape[0] :].clone()
        denoised = super().combine_denoised(x_out, conds_list, uncond, cond_scale)
        return denoised.clamp(-self.clamp, self.clamp)  # thresholding of the guided estimate


class SampleGuidance(scripts.Script):
    last_id = 0

    def title(self):
        return "Sample guidance"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [
            gr.Dropdown(choices=MODES, value="off", label="Guidance mode"),
            gr.Number(value=lambda: 1.0, label="Clamp"),  # a callable value, as adetailer has,
        ]

    def process_batch(self, p, mode, clamp, batch_number, prompts, seeds, subseeds):
        if mode == "off":
            return
        SampleGuidance.last_id += 1
        original = sd_samplers.all_samplers_map[p.sampler_name]
        name = f"{p.sampler_name}_sampleguidance{SampleGuidance.last_id}"

        def constructor(model):
            sampler = original.constructor(model)
            sampler.model_wrap_cfg = SampleGuidanceCFG(sampler, mode, float(clamp))
            return sampler

        sd_samplers.all_samplers_map[name] = sd_samplers_common.SamplerData(
            name, constructor, original.aliases, original.options
        )
        p.orig_sampler_name, p.sampler_name = p.sampler_name, name
        p.extra_generation_params["Sample guidance"] = mode
        if p.sampler is not None:
            p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)

    def postprocess_batch(self, p, mode, clamp, **kwargs):
        if not hasattr(p, "orig_sampler_name"):
            return
        steps = p.extra_generation_params.get("Sample guidance steps")
        if isinstance(steps, list):  # for the infotext: first and last step seen, and how many
            p.extra_generation_params["Sample guidance steps"] = f"{steps[0]} .. {steps[-1]} ({len(steps)})"
        del sd_samplers.all_samplers_map[p.sampler_name]
        p.sampler_name = p.orig_sampler_name
        del p.orig_sampler_name


def add_axis_options():
    """As dynamic thresholding does: find the X/Y/Z plot by its module's name and add an axis to it."""
    xyz = [
        x for x in scripts.scripts_data if x.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid")
    ]
    module = xyz[0].module
    if not any(a.label == "[Sample] Guidance clamp" for a in module.axis_options):
        module.axis_options.append(
            module.AxisOption("[Sample] Guidance clamp", float, module.apply_field("sample_guidance_clamp"))
        )


script_callbacks.on_before_ui(add_axis_options)
