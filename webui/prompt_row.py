"""Prompt and negative prompt with live token counters, Generate / Interrupt / Skip, and styles."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass

import gradio as gr

from modules.styles import PromptStyle
from webui.backend import UiBackend, describe_error
from webui.progress import error_html

log = logging.getLogger(__name__)


@dataclass
class PromptRow:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    styles: gr.Dropdown
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button


def token_counter_html(backend: UiBackend, text: str, is_positive: bool = True) -> str:
    try:
        count, limit = backend.count_tokens(text or "", is_positive)
    except Exception as exc:  # no model loaded yet, or no tokenizer: the counter stays quiet
        log.debug("token count unavailable: %s", exc)
        return ""
    return f"<span>{count}/{limit}</span>"


def build_prompt_row(tab: str, backend: UiBackend) -> PromptRow:
    with gr.Row(elem_id=f"{tab}_toprow", elem_classes="prompt-row"):
        with gr.Column(scale=6, min_width=280, elem_id=f"{tab}_prompt_container"):
            prompt = gr.Textbox(
                label="Prompt",
                elem_id=f"{tab}_prompt",
                lines=3,
                placeholder="Prompt (press Ctrl+Enter to generate)",
                elem_classes="prompt",
            )
            prompt_tokens = gr.HTML(elem_id=f"{tab}_token_counter", elem_classes="token-counter")
            negative_prompt = gr.Textbox(
                label="Negative prompt",
                elem_id=f"{tab}_neg_prompt",
                lines=2,
                placeholder="Negative prompt (press Ctrl+Enter to generate)",
                elem_classes="prompt",
            )
            negative_tokens = gr.HTML(elem_id=f"{tab}_negative_token_counter", elem_classes="token-counter")
        with gr.Column(scale=1, min_width=160, elem_id=f"{tab}_actions_column"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", min_width=60)
            styles = gr.Dropdown(
                label="Styles",
                choices=backend.styles.names(),
                multiselect=True,
                elem_id=f"{tab}_styles",
                value=[],
            )
            with gr.Row():
                apply_styles = gr.Button(
                    "Apply styles", elem_id=f"{tab}_style_apply", min_width=60, size="sm"
                )
                save_style = gr.Button("Save style", elem_id=f"{tab}_style_create", min_width=60, size="sm")
            style_name = gr.Textbox(label="New style name", elem_id=f"{tab}_style_name", max_lines=1)
            style_status = gr.HTML(elem_id=f"{tab}_style_status")

    for box, counter, positive in ((prompt, prompt_tokens, True), (negative_prompt, negative_tokens, False)):
        box.change(
            lambda text, positive=positive: token_counter_html(backend, text, positive),
            inputs=box,
            outputs=counter,
            show_progress="hidden",
            trigger_mode="always_last",
            queue=False,
        )

    def apply(prompt_text: str, negative_text: str, names: list[str]):
        """Fold the selected styles into the prompt boxes and clear the selection (A1111 behaviour)."""
        try:
            new_prompt = backend.styles.apply_to_prompt(prompt_text, names or [])
            new_negative = backend.styles.apply_to_negative_prompt(negative_text, names or [])
        except Exception as exc:
            return gr.update(), gr.update(), gr.update(), error_html(describe_error(exc))
        return new_prompt, new_negative, [], ""

    apply_styles.click(
        apply,
        inputs=[prompt, negative_prompt, styles],
        outputs=[prompt, negative_prompt, styles, style_status],
        show_progress="hidden",
    )

    def save(name: str, prompt_text: str, negative_text: str):
        try:
            backend.styles.save_style(PromptStyle((name or "").strip(), prompt_text, negative_text))
        except Exception as exc:
            return gr.update(), error_html(describe_error(exc))
        return gr.update(choices=backend.styles.names()), f"<span>Saved style {html.escape(name)}</span>"

    save_style.click(
        save,
        inputs=[style_name, prompt, negative_prompt],
        outputs=[styles, style_status],
        show_progress="hidden",
    )
    return PromptRow(prompt, negative_prompt, styles, generate, interrupt, skip)
