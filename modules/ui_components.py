"""A1111's `modules.ui_components` for extensions: small Gradio subclasses many extensions import.

Each keeps its Gradio base's front-end block (`get_block_name`), so the browser renders a known component.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class FormComponent:
    def get_block_name(self) -> str:
        for base in type(self).__mro__[1:]:
            if issubclass(base, gr.blocks.Block) and base.__module__.startswith("gradio"):
                return base.__name__.lower()
        return super().get_block_name()


class ToolButton(FormComponent, gr.Button):
    """Small square button with an icon text."""

    def __init__(self, *args: Any, **kwargs: Any):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class ResizeHandleRow(FormComponent, gr.Row):
    pass


class FormRow(FormComponent, gr.Row):
    pass


class FormColumn(FormComponent, gr.Column):
    pass


class FormGroup(FormComponent, gr.Group):
    pass


class FormHTML(FormComponent, gr.HTML):
    pass


class FormColorPicker(FormComponent, gr.ColorPicker):
    pass


class DropdownMulti(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs: Any):
        super().__init__(multiselect=True, **kwargs)


class DropdownEditable(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs: Any):
        super().__init__(allow_custom_value=True, **kwargs)


class InputAccordion(FormComponent, gr.Checkbox):
    """A checkbox (its value is what the script receives) followed by an accordion for the controls:
    `with InputAccordion(False, label="My feature") as enabled: ...`."""

    accordion_id_counter = 0

    def __init__(self, value: bool, **kwargs: Any):
        label = kwargs.get("label", "")
        is_open = kwargs.pop("open", False)
        InputAccordion.accordion_id_counter += 1
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{InputAccordion.accordion_id_counter}"
        super().__init__(value=value, **kwargs)
        self.accordion = gr.Accordion(label=label, open=is_open, elem_id=f"{self.accordion_id}-acc")

    def extra(self) -> gr.Column:
        return gr.Column(min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)
