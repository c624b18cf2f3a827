"""A preprocessor's parameters and the extension's slider table (label, min, max, default, step)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PreprocessParams:
    """What a unit gives its preprocessor: processor_res and threshold_a / threshold_b (already resolved)."""

    resolution: int = 512
    threshold_a: float = 0.0
    threshold_b: float = 0.0
    seed: int | None = None  # shuffle's random flow; None: fresh randomness
    device: str = "cpu"  # where model-based annotators run (a unit's: the checkpoint's device)


@dataclass(frozen=True)
class Slider:
    """One of the extension's preprocessor sliders (its `PreprocessorParameter`)."""

    label: str
    minimum: float
    maximum: float
    value: float
    step: float = 0.01

    def api_json(self) -> dict[str, float | str]:
        """The extension's /controlnet/module_list `module_detail` slider shape."""
        return {
            "name": self.label,
            "value": self.value,
            "min": self.minimum,
            "max": self.maximum,
            "step": self.step,
        }


RESOLUTION = Slider("Resolution", 64, 2048, 512, 8)
