"""Settings of the built-in ControlNet (sd-webui-controlnet's option names), collected into
sdwebui.config.options."""

from __future__ import annotations

import dataclasses
from typing import Any

from sdwebui.config.option_info import OptionInfo
from sdwebui.models.controlnet import ControlNets

SECTION_CONTROLNET = ("control_net", "ControlNet")


def controlnet_templates() -> dict[str, OptionInfo]:
    return {name: OptionInfo(**kwargs) for name, kwargs in _controlnet_templates_kwargs().items()}


def _controlnet_templates_kwargs() -> dict[str, dict[str, Any]]:
    return {
        "control_net_unit_count": {
            "default": 3,
            "label": "Multi-ControlNet: ControlNet unit number (requires restart)",
            "component_args": {"minimum": 1, "maximum": 10, "step": 1},
        },
        "control_net_model_cache_size": {
            "default": 2,
            "label": "Model cache size (requires restart)",
            "component_args": {"minimum": 1, "maximum": 10, "step": 1},
        },
        "control_net_inpaint_blur_sigma": {
            "default": 7,
            "label": "ControlNet inpainting Gaussian blur sigma",
            "component_args": {"minimum": 0, "maximum": 64, "step": 1},
        },
        "control_net_no_detectmap": {"default": False, "label": "Do not append detectmap to output"},
    }


def job_controlnets(controlnets: ControlNets | None, values: dict[str, Any]) -> ControlNets | None:
    """The job's control models with its ControlNet settings (options with override_settings applied);
    the caches stay shared."""
    if controlnets is None:
        return None
    sigma = int(values.get("control_net_inpaint_blur_sigma", 7))
    return dataclasses.replace(controlnets, inpaint_blur_sigma=sigma)
