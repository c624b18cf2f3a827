"""Settings of the built-in ControlNet (sd-webui-controlnet's option names), collected into
sdwebui.config.options."""

from __future__ import annotations

from typing import Any

from sdwebui.config.option_info import OptionInfo

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
        "control_net_no_detectmap": {"default": False, "label": "Do not append detectmap to output"},
    }
