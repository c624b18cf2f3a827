"""Prompt and negative prompt with live token counters, Generate / Interrupt / Skip, and styles."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass

import gradio as gr

from sdwebui.config.styles import PromptStyle
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


@dataclass
class _StyleControls:
    styles: gr.Dropdown
    apply: gr.Button
    name: gr.Textbox
    save: gr.Button
    status: gr.HTML


def build_prompt_row(tab: str, backend: UiBackend) -> PromptRow:
    with gr.Row(elem_id=f"{tab}_toprow", elem_classes="prompt-row"):
        with gr.Column(scale=6, min_width=280, elem_id=f"{tab}_prompt_container"):
            prompt, prompt_tokens = _prompt_box(tab, positive=True)
            negative_prompt, negative_tokens = _prompt_box(tab, positive=False)
        with gr.Column(scale=1, min_width=160, elem_id=f"{tab}_actions_column"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            # shown only while this session's job runs (A1111): see job_buttons()
            with gr.Row(elem_id=f"{tab}_job_buttons", elem_classes="job-buttons"):
                interrupt = gr.Button(
                    "Interrupt", elem_id=f"{tab}_interrupt", min_width=0, size="sm", visible="hidden"
                )
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", min_width=0, size="sm", visible="hidden")
            style = _style_controls(tab, backend)

    for box, counter, positive in ((prompt, prompt_tokens, True), (negative_prompt, negative_tokens, False)):
        box.change(
            lambda text, positive=positive: token_counter_html(backend, text, positive),
            inputs=box,
            outputs=counter,
            show_progress="hidden",
            trigger_mode="always_last",
            queue=False,
        )
    _wire_styles(backend, style, prompt, negative_prompt)
    return PromptRow(prompt, negative_prompt, style.styles, generate, interrupt, skip)


def _prompt_box(tab: str, positive: bool) -> tuple[gr.Textbox, gr.HTML]:
    """The prompt (or negative prompt) box and its token counter."""
    if positive:
        label, lines, box_id, counter_id = "Prompt", 3, f"{tab}_prompt", f"{tab}_token_counter"
    else:
        label, lines, box_id, counter_id = (
            "Negative prompt",
            2,
            f"{tab}_neg_prompt",
            f"{tab}_negative_token_counter",
        )
    box = gr.Textbox(
        label=label,
        elem_id=box_id,
        lines=lines,
        placeholder=f"{label} (press Ctrl+Enter to generate)",
        elem_classes="prompt",
    )
    return box, gr.HTML(elem_id=counter_id, elem_classes="token-counter")


def _style_controls(tab: str, backend: UiBackend) -> _StyleControls:
    with gr.Row(elem_id=f"{tab}_styles_row", elem_classes="compact-row"):
        styles = gr.Dropdown(
            label="Styles",
            show_label=False,
            choices=backend.styles.names(),
            multiselect=True,
            elem_id=f"{tab}_styles",
            value=[],
            min_width=100,
        )
        apply_styles = gr.Button("Apply", elem_id=f"{tab}_style_apply", min_width=64, scale=0, size="sm")
    with gr.Row(elem_id=f"{tab}_style_save_row", elem_classes="compact-row"):
        style_name = gr.Textbox(
            label="New style name",
            show_label=False,
            placeholder="New style name",
            elem_id=f"{tab}_style_name",
            max_lines=1,
            min_width=100,
        )
        save_style = gr.Button("Save", elem_id=f"{tab}_style_create", min_width=64, scale=0, size="sm")
    return _StyleControls(
        styles, apply_styles, style_name, save_style, gr.HTML(elem_id=f"{tab}_style_status")
    )


def _wire_styles(backend: UiBackend, style: _StyleControls, prompt: gr.Textbox, negative_prompt: gr.Textbox):
    def apply(prompt_text: str, negative_text: str, names: list[str]):
        """Fold the selected styles into the prompt boxes and clear the selection (A1111 behaviour)."""
        try:
            new_prompt = backend.styles.apply_to_prompt(prompt_text, names or [])
            new_negative = backend.styles.apply_to_negative_prompt(negative_text, names or [])
        except Exception as exc:
            return gr.update(), gr.update(), gr.update(), error_html(describe_error(exc))
        return new_prompt, new_negative, [], ""

    style.apply.click(
        apply,
        inputs=[prompt, negative_prompt, style.styles],
        outputs=[prompt, negative_prompt, style.styles, style.status],
        show_progress="hidden",
    )

    def save(name: str, prompt_text: str, negative_text: str):
        try:
            backend.styles.save_style(PromptStyle((name or "").strip(), prompt_text, negative_text))
        except Exception as exc:
            return gr.update(), error_html(describe_error(exc))
        return gr.update(choices=backend.styles.names()), f"<span>Saved style {html.escape(name)}</span>"

    style.save.click(
        save,
        inputs=[style.name, prompt, negative_prompt],
        outputs=[style.styles, style.status],
        show_progress="hidden",
    )


def job_buttons(running: bool) -> tuple:
    """Interrupt / Skip updates: shown while a job runs, hidden (kept in the DOM) otherwise."""
    visible = True if running else "hidden"
    return gr.update(visible=visible), gr.update(visible=visible)


def wire_generate(row: PromptRow, generate, inputs, outputs) -> None:
    """Generate shows Interrupt / Skip, runs the job generator, then hides them again."""
    buttons = [row.interrupt, row.skip]
    row.generate.click(lambda: job_buttons(True), outputs=buttons, show_progress="hidden", queue=False).then(
        generate, inputs=inputs, outputs=outputs, show_progress="hidden", concurrency_limit=None
    ).then(lambda: job_buttons(False), outputs=buttons, show_progress="hidden", queue=False)
