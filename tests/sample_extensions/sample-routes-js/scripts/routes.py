"""Adds its own HTTP route from on_app_started (as infinite image browsing, tagcomplete, images browser)."""

import gradio as gr
from fastapi import FastAPI

from modules import script_callbacks


def on_app_started(demo, app: FastAPI):
    elem_ids = [getattr(block, "elem_id", None) for block in demo.blocks.values()] if demo is not None else []

    @app.get("/sample-routes/ping")
    def ping(name: str = "world"):
        return {
            "greeting": f"hello {name}",
            "demo": type(demo).__name__,
            "is_blocks": isinstance(demo, gr.Blocks),
            "has_txt2img_prompt": "txt2img_prompt" in elem_ids,
        }


script_callbacks.on_app_started(on_app_started)
