"""Written for A1111 1.x (Gradio 3.41): every keyword here is Gradio 3's, translated by the app's compat."""

import gradio as gr

from modules import script_callbacks, scripts


class ForgeStyleBox(gr.Checkbox):
    """As regional prompter's InputAccordionImpl: a subclass Forge-era extensions give this module name."""

    def get_block_name(self):
        return "checkbox"


ForgeStyleBox.__module__ = "modules.ui_components"


def refresh_choices():
    return gr.Dropdown.update(choices=["a", "b", "c"], value="b")


class Gradio3Script(scripts.Script):
    def title(self):
        return "Sample gradio3"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Box():
            image = gr.Image(source="upload", tool="sketch", type="pil", shape=(64, 64), elem_id="g3_image")
            word = gr.inputs.Textbox(default="hello", label="Word")
            note = gr.Textbox(show_copy_button=True, elem_id="g3_note")
            choice = gr.Dropdown(choices=["a"], value="a", label="Choice")
            refresh = gr.Button("Refresh").style(full_width=False)
            gallery = gr.Gallery(elem_id="g3_gallery").style(grid=3, height="auto")
            ForgeStyleBox(value=False, label="Forge style", elem_id="g3_forge")
        refresh.click(refresh_choices, inputs=[], outputs=[choice], _js="(x) => x")
        step = word.change(lambda w: w.upper(), inputs=[word], outputs=[note], status_tracker=None)
        step.then(lambda w: w, inputs=[note], outputs=[note], _js="(n) => n")
        return [image, word, choice, gallery]

    def process(self, p, image, word, choice, gallery):
        p.extra_generation_params["Sample gradio3"] = f"{word}/{choice}"


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row().style(equal_height=True):
            clock = gr.Textbox(label="Clock", elem_id="g3_clock")
        tab.load(lambda: "tick", inputs=None, outputs=[clock], every=5)
    return [(tab, "Gradio 3", "g3_tab")]


script_callbacks.on_ui_tabs(on_ui_tabs)
