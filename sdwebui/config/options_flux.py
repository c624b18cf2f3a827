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
    }
