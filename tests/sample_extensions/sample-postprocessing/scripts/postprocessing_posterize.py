"""A sample Extras step (A1111's scripts_postprocessing): posterize the image to `bits` bits per channel when
enabled, note it in the infotext, and add a grey copy as an extra image."""

import gradio as gr
from PIL import ImageOps

from modules import scripts_postprocessing
from modules.ui_components import InputAccordion


class ScriptPostprocessingPosterize(scripts_postprocessing.ScriptPostprocessing):
    name = "Posterize"
    order = 5000

    def ui(self):
        with InputAccordion(False, label="Posterize") as enable:
            bits = gr.Slider(minimum=1, maximum=8, step=1, value=2, label="Bits")
        return {"enable": enable, "bits": bits}

    def process(self, pp: scripts_postprocessing.PostprocessedImage, enable, bits):
        if not enable:
            return
        pp.image = ImageOps.posterize(pp.image.convert("RGB"), int(bits))
        pp.info["Posterize"] = int(bits)
        pp.extra_images.append(pp.image.convert("L"))
