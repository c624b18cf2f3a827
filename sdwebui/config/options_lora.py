"""A1111's Lora and extra networks settings (its Lora extension's and the Extra Networks section's).

Where each one acts: `lora_preferred_name`, `lora_show_all`, `lora_hide_unknown_for_versions`,
`extra_networks_default_multiplier` and `extra_networks_add_text_separator` in the cards panel
(webui.extra_networks, javascript/extra_networks.js); `sd_lora` adds its network to every job's prompt at
the default multiplier (sdwebui.services, as A1111's Lora extension does); `lora_in_memory_limit` is how
many read networks are kept per model (sdwebui.models.lora.library; 0: the built-in 16, since the networks
of the running job stay in memory anyway). `lora_add_hashes_to_infotext` is in sdwebui.config.options.
"""

from __future__ import annotations

from typing import Any

from sdwebui.config.option_info import OptionInfo

SD_VERSIONS = ("SD1", "SD2", "SDXL")


def _check_versions(value: Any) -> str | None:
    if not isinstance(value, list) or any(v not in SD_VERSIONS for v in value):
        return f"expected a list of {', '.join(SD_VERSIONS)}, got {value!r}"
    return None


def lora_templates() -> dict[str, OptionInfo]:
    """Lora and extra networks settings, with A1111's names, defaults and labels."""
    return {
        "sd_lora": OptionInfo("None", "Add network to prompt", comment_after="(a Lora file name, or None)"),
        "lora_preferred_name": OptionInfo(
            "Alias from file",
            "When adding to prompt, refer to Lora by",
            choices=["Alias from file", "Filename"],
        ),
        "lora_show_all": OptionInfo(False, "Always show all networks on the Lora page").info(
            "otherwise, those detected as for incompatible version of Stable Diffusion will be hidden"
        ),
        "lora_hide_unknown_for_versions": OptionInfo(
            [], "Hide networks of unknown versions for model versions", validator=_check_versions
        ),
        "lora_in_memory_limit": OptionInfo(
            0,
            "Number of Lora networks to keep cached in memory",
            component_args={"minimum": 0, "maximum": 256},
        ),
        "extra_networks_default_multiplier": OptionInfo(
            1.0,
            "Default multiplier for extra networks",
            component_args={"minimum": 0.0, "maximum": 2.0, "step": 0.01},
        ),
        "extra_networks_add_text_separator": OptionInfo(" ", "Extra networks separator").info(
            "extra text to add before <...> when adding extra network to prompt"
        ),
    }
