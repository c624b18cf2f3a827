"""Settings of the DiT families (Flux, SD3): Forge's "VAE / Text Encoder" selector. The keyword arguments
of each OptionInfo, which sdwebui.config.options builds (this module imports nothing of it: no cycle)."""

from __future__ import annotations

from typing import Any

SECTION_FLUX = ("flux", "Flux / SD3")


def _module_names(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of module file names (GET /sdapi/v1/sd-modules), got {value!r}"
    return None


def flux_templates() -> dict[str, dict[str, Any]]:
    return {
        "forge_additional_modules": {
            "default": [],
            "label": "VAE / Text Encoder: separate parts of Flux / SD3 checkpoints (models/VAE, "
            "models/text_encoder), by file name",
            "validator": _module_names,
        },
    }
