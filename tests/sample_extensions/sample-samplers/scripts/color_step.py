"""Sample extension in the way of sd-webui-vectorscope-cc (used by the tests): at import it wraps
`KDiffusionSampler.callback_state` on the class, restores it when the scripts unload, and its wrapper edits
the step's latents (`d["x"]`) or denoised estimate in place. `GET /sample-samplers/log` returns the steps seen.
"""

import gradio as gr
import torch

from modules import script_callbacks, scripts
from modules.sd_samplers_kdiffusion import KDiffusionSampler

MODES = ["off", "unchanged", "shift x", "flat denoised"]
SEEN = []  # per step of the last job: [i, keys of d, shape of x, sigma]
original_callback = KDiffusionSampler.callback_state


@torch.inference_mode()
def sample_cc_callback(self, d):
    cc = getattr(KDiffusionSampler, "sample_cc", {"mode": "off"})
    if cc["mode"] == "off":
        return original_callback(self, d)
    SEEN.append([d["i"], sorted(d), list(d["x"].shape), float(d["sigma"]), self.p.steps])
    if cc["mode"] == "shift x":
        d["x"][:, 0] += cc["amount"]
    elif cc["mode"] == "flat denoised" and d["i"] == cc["steps"] - 1:
        d["denoised"].zero_()  # the last step lands on it: every seed decodes the same latents
    return original_callback(self, d)


def restore_callback():
    KDiffusionSampler.callback_state = original_callback


def on_app_started(demo, app):
    app.add_api_route("/sample-samplers/log", lambda: SEEN, methods=["GET"])


KDiffusionSampler.callback_state = sample_cc_callback
script_callbacks.on_script_unloaded(restore_callback)
script_callbacks.on_app_started(on_app_started)


class SampleColor(scripts.Script):
    def title(self):
        return "Sample color step"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [
            gr.Dropdown(choices=MODES, value="off", label="Step mode"),
            gr.Number(value=0.5, label="Amount"),
        ]

    def process_batch(self, p, mode, amount, batch_number, prompts, seeds, subseeds):
        SEEN.clear()
        KDiffusionSampler.sample_cc = {"mode": mode, "amount": float(amount), "steps": p.steps}

    def postprocess(self, p, processed, mode, amount):
        KDiffusionSampler.sample_cc = {"mode": "off"}
