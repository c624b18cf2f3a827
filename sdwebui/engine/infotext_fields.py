"""An A1111 infotext read back into fields (PNG Info, paste, `parse_generation_parameters`): the format's
parser (sdwebui.outputs.infotext) with legacy sampler names ("DPM++ 2M Karras") split by the sampler registry."""

from __future__ import annotations

from typing import Any

from sdwebui.engine import samplers
from sdwebui.outputs import infotext


def parse_infotext(text: str, fill_defaults: bool = True) -> dict[str, Any]:
    """A1111's `parse_generation_parameters`; with `fill_defaults`, A1111's paste-time defaults too."""
    return infotext.parse_infotext(text, fill_defaults, split_legacy_sampler_name)


def split_legacy_sampler_name(name: str, schedule: str | None) -> tuple[str, str] | None:
    """ "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras"); None for a name that is already a sampler's (or an
    extension's sampler, kept as written)."""
    try:
        sampler, schedule_label = samplers.resolve_sampler(name, schedule)
    except samplers.UnknownSamplerError:
        return None
    written = name.strip().lower()
    if sampler.name.lower() == written or written in map(str.lower, sampler.aliases):
        return None
    return sampler.name, schedule_label
