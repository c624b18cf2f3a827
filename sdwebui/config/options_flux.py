"""Settings of the DiT families (Flux, SD3): Forge's "VAE / Text Encoder" selector, collected into
sdwebui.config.options."""

from __future__ import annotations

from typing import Any

from sdwebui.config.option_info import OptionInfo

SECTION_FLUX = ("flux", "Flux / SD3")


def _module_names(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of module file names (GET /sdapi/v1/sd-modules), got {value!r}"
    return None


def _slg_layers(value: Any) -> str | None:
    from sdwebui.engine.flow.slg import parse_layers

    try:
        parse_layers(value)
    except ValueError as error:
        return str(error)
    return None


def _slider(default: float, label: str, maximum: float) -> dict[str, Any]:
    return {"default": default, "label": label, "component_args": {"minimum": 0.0, "maximum": maximum}}


def flux_templates() -> dict[str, OptionInfo]:
    return {name: OptionInfo(**kwargs) for name, kwargs in _flux_templates_kwargs().items()}


def _flux_templates_kwargs() -> dict[str, dict[str, Any]]:
    return {
        "forge_additional_modules": {
            "default": [],
            "label": "VAE / Text Encoder: separate parts of Flux / SD3 checkpoints (models/VAE, "
            "models/text_encoder), by file name",
            "validator": _module_names,
        },
        # SD3.5 medium's skip-layer guidance (diffusers' skip_guidance_layers; SD3 models, CFG > 1)
        "sd3_slg_layers": {
            "default": "",
            "label": "SD3 skip-layer guidance (SLG): transformer blocks to skip, e.g. 7,8,9 for SD3.5 "
            "medium; empty = off",
            "validator": _slg_layers,
        },
        "sd3_slg_scale": _slider(2.8, "SLG scale", 10.0),
        "sd3_slg_start": _slider(0.01, "SLG from this share of the steps", 1.0),
        "sd3_slg_stop": _slider(0.2, "SLG until this share of the steps", 1.0),
    }
