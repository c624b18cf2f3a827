"""Infotext note: an always-visible example script that adds a "Note" to every image's infotext.

Dogfood for AlwaysVisible scripts: ui() values arrive as *args in every hook.
"""

from __future__ import annotations

import gradio as gr

from modules import scripts


class InfotextNote(scripts.Script):
    sorting_priority = 100

    def title(self):
        return "Infotext note"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Infotext note", open=False):
            enabled = gr.Checkbox(
                label="Add a note to the infotext", value=False, elem_id=self.elem_id("enabled")
            )
            note = gr.Textbox(label="Note", value="", elem_id=self.elem_id("note"))
        return [enabled, note]

    def process(self, p, enabled, note):
        if enabled and note and note.strip():
            # one line: the infotext is line-based; commas and quotes are quoted by the infotext writer
            p.extra_generation_params["Note"] = " ".join(note.split())
