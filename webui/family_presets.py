"""Forge's presets, taken from the model: when the family of the model the UI generates with changes (an SD
checkpoint to Flux or SD3, or back), txt2img's and img2img's sampler, steps, CFG Scale and Distilled CFG Scale
take that family's defaults (Flux dev: Euler, CFG 1, distilled 3.5). Switching between checkpoints of
families with the same defaults leaves what the user set alone."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdwebui.models.families import FamilyDefaults
from webui.backend import UiBackend
from webui.params import ParamControls, family_outputs, family_values
from webui.settings_tab import SettingsControls

CHECKPOINT_KEY = "sd_model_checkpoint"


def _key(family: FamilyDefaults) -> tuple:
    return family.sampler_name, family.steps, family.cfg_scale, family.distilled_cfg_scale


def wire_family_presets(
    demo: gr.Blocks, backend: UiBackend, quick: SettingsControls, tabs: list[ParamControls]
):
    """On page load and after the checkpoint quicksetting applied (the model is loaded then)."""
    outputs = [component for params in tabs for component in family_outputs(params)]
    bases = [{"steps": p.steps.value, "cfg_scale": p.cfg_scale.value} for p in tabs]  # ui-config.json's
    shown = gr.State(None)  # the family defaults the page shows now (None: not set since the page loaded)

    def update(previous: tuple | None) -> list[Any]:
        family = backend.family_defaults()
        if previous == _key(family):
            return [gr.update() for _ in outputs] + [previous]
        sampler = backend.options.get("default_sampler", "")
        values = [value for base in bases for value in family_values(family, base, sampler)]
        return [*values, _key(family)]

    demo.load(update, inputs=shown, outputs=[*outputs, shown], show_progress="hidden")
    if CHECKPOINT_KEY in quick.keys:
        applied = quick.applied[quick.keys.index(CHECKPOINT_KEY)]
        applied.then(update, inputs=shown, outputs=[*outputs, shown], show_progress="hidden")
