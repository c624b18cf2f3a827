"""A1111's `modules.ui_common`: the small UI helpers extensions build their tabs with."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdwebui.facade.ui_components import ToolButton

folder_symbol = "\U0001f4c2"  # 📂
refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """Escaped lines joined by <br> in one <p> (A1111)."""
    content = "<br>\n".join(html.escape(line) for line in (text or "").split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(
    refresh_component: Any, refresh_method: Callable[[], Any], refreshed_args: Any, elem_id: str | None
) -> gr.Button:
    """A 🔄 button: calls `refresh_method()`, then updates the component(s) with `refreshed_args` (a dict,
    or a function returning one, e.g. `lambda: {"choices": new_list}`)."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = next((c.label for c in components if getattr(c, "label", None)), None)

    def refresh() -> Any:
        refresh_method()
        args = (refreshed_args() if callable(refreshed_args) else refreshed_args) or {}
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id, elem_classes=["refresh"])
    button.click(fn=refresh, inputs=[], outputs=components, api_name=False)
    if label:
        button.label = f"{label}: refresh"
    return button


@dataclass
class OutputPanel:
    gallery: Any = None
    generation_info: Any = None
    infotext: Any = None
    html_log: Any = None
    button_upscale: Any = None


def create_output_panel(tabname: str, outdir: str | None = None, toprow: Any = None) -> OutputPanel:
    """A result gallery with its hidden generation info, the infotext and a log area (A1111's layout)."""
    with gr.Column(elem_id=f"{tabname}_results"):
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4)
        generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
        infotext = gr.HTML(elem_id=f"html_info_{tabname}", elem_classes="infotext")
        html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes="html-log")
    return OutputPanel(gallery, generation_info, infotext, html_log, None)
