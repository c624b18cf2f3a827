"""A1111's Refiner accordion (SDXL): the checkpoint the last pass switches to and "Switch at"; the choice
"None" is no refiner. Read into `RawFields` by name; PNG Info pastes "Refiner" / "Refiner switch at" back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.ui_config import UiConfig

NO_REFINER = "None"


@dataclass
class RefinerControls:
    checkpoint: gr.Dropdown
    switch_at: gr.Slider

    def components(self) -> list[gr.components.Component]:
        return [self.checkpoint, self.switch_at]

    def request_fields(self, values: dict) -> dict[str, Any]:
        return {
            "refiner_checkpoint": values[self.checkpoint] or NO_REFINER,
            "refiner_switch_at": float(values[self.switch_at]),
        }

    def paste_fields(self) -> tuple:
        return (("Refiner", self.checkpoint, str), ("Refiner switch at", self.switch_at, float))


def build_refiner(tab: str, cfg: UiConfig, backend: Any) -> RefinerControls:
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab}_refiner"):
        with gr.Row():
            checkpoint = cfg.make(tab, gr.Dropdown, "Checkpoint", choices=[NO_REFINER, *backend.checkpoints()],
                                  value=NO_REFINER, elem_id=f"{tab}_refiner_checkpoint")  # fmt: skip
            switch_at = cfg.make(tab, gr.Slider, "Switch at", minimum=0.01, maximum=1.0, step=0.01, value=0.8,
                                 elem_id=f"{tab}_refiner_switch_at")  # fmt: skip
    return RefinerControls(checkpoint, switch_at)
