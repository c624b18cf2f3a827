"""SD3.5 medium's skip-layer guidance (diffusers' `StableDiffusion3Pipeline` `skip_guidance_layers`;
ComfyUI's / Forge users' "SLG"): inside its step window, with CFG on, the transformer runs once more on the
cond rows with some joint blocks skipped, and the guided prediction moves away from that weaker one:
guided + scale * (cond - cond_skipped)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SkipLayerGuidance:
    layers: tuple[int, ...] = ()  # transformer block indexes to skip; () = off (sd3_slg_layers)
    scale: float = 2.8  # sd3_slg_scale (diffusers' default)
    start: float = 0.01  # sd3_slg_start: from this share of the steps (exclusive, as diffusers)
    stop: float = 0.2  # sd3_slg_stop: up to this share (exclusive)

    @property
    def enabled(self) -> bool:
        return bool(self.layers) and self.scale != 0

    def applies(self, step: int, total_steps: int) -> bool:
        """diffusers' window: step index i with total * start < i < total * stop."""
        return self.enabled and total_steps * self.start < step < total_steps * self.stop

    def infotext(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        return {
            "SLG layers": ",".join(str(n) for n in self.layers),
            "SLG scale": self.scale,
            "SLG start": self.start,
            "SLG stop": self.stop,
        }


def parse_layers(text: str) -> tuple[int, ...]:
    """ "7, 8, 9" -> (7, 8, 9); "" -> (). ValueError names what is wrong."""
    parts = [part.strip() for part in str(text).replace(" ", ",").split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"must be block numbers separated by commas (e.g. 7,8,9), got {text!r}")
    return tuple(sorted({int(part) for part in parts}))


def from_values(values: Mapping[str, Any]) -> SkipLayerGuidance:
    return SkipLayerGuidance(
        parse_layers(values.get("sd3_slg_layers") or ""),
        float(values.get("sd3_slg_scale", 2.8)),
        float(values.get("sd3_slg_start", 0.01)),
        float(values.get("sd3_slg_stop", 0.2)),
    )
