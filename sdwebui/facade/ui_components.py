"""A1111's `modules.ui_components` for extensions: the small Gradio helpers many extensions import.

Plain factories over stock Gradio components, not subclasses: Gradio writes a `.pyi` stub next to any
module that subclasses a component, and the browser only knows the stock blocks anyway.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class FormComponent:
    """Marker base kept for extensions that reference it."""


def ToolButton(*args: Any, **kwargs: Any) -> gr.Button:  # noqa: N802 (A1111 class name)
    """Small square button with an icon text."""
    classes = kwargs.pop("elem_classes", None) or []
    return gr.Button(*args, elem_classes=["tool", *classes], **kwargs)


def FormRow(**kwargs: Any) -> gr.Row:  # noqa: N802
    return gr.Row(**kwargs)


def ResizeHandleRow(**kwargs: Any) -> gr.Row:  # noqa: N802
    return gr.Row(**kwargs)


def FormColumn(**kwargs: Any) -> gr.Column:  # noqa: N802
    return gr.Column(**kwargs)


def FormGroup(**kwargs: Any) -> gr.Group:  # noqa: N802
    return gr.Group(**kwargs)


def FormHTML(*args: Any, **kwargs: Any) -> gr.HTML:  # noqa: N802
    return gr.HTML(*args, **kwargs)


def FormColorPicker(*args: Any, **kwargs: Any) -> gr.ColorPicker:  # noqa: N802
    return gr.ColorPicker(*args, **kwargs)


def DropdownMulti(**kwargs: Any) -> gr.Dropdown:  # noqa: N802
    return gr.Dropdown(multiselect=True, **kwargs)


def DropdownEditable(**kwargs: Any) -> gr.Dropdown:  # noqa: N802
    return gr.Dropdown(allow_custom_value=True, **kwargs)


class InputAccordion:
    """`with InputAccordion(False, label="My feature") as enabled:` — `enabled` is the checkbox whose value
    the script receives; the controls created inside the block go into an accordion below it."""

    def __init__(self, value: bool, **kwargs: Any):
        is_open = kwargs.pop("open", False)
        label = kwargs.get("label", "")
        self.checkbox = gr.Checkbox(value=value, **kwargs)
        self.accordion = gr.Accordion(label=label, open=is_open)

    def __enter__(self) -> gr.Checkbox:
        self.accordion.__enter__()
        return self.checkbox

    def __exit__(self, exc_type, exc_val, exc_tb):
        return self.accordion.__exit__(exc_type, exc_val, exc_tb)
