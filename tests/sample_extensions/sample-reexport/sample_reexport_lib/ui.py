"""The Script classes live in a package of the extension (as in dynamic prompts, aspect ratio helper)."""

import gradio as gr

from modules import scripts


class ReexportedScript(scripts.Script):
    """Alwayson: appends its tag to every prompt and records it in the infotext."""

    def title(self):
        return "Sample reexport"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Textbox(value="reexported", label="Reexport tag")]

    def process(self, p, tag):
        p.all_prompts = [f"{prompt} {tag}" for prompt in p.all_prompts]
        p.extra_generation_params["Sample reexport"] = tag


class ReexportedSelectable(scripts.Script):
    """Selectable: runs the normal generation with the prompt replaced."""

    def title(self):
        return "Sample reexport selectable"

    def ui(self, is_img2img):
        return [gr.Textbox(value="replaced", label="Replacement prompt")]

    def run(self, p, replacement):
        from modules.processing import process_images

        p.prompt = replacement
        return process_images(p)
