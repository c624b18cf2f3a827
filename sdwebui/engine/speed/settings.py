"""Speed and weight-size settings of a job (option names in comments)."""

from __future__ import annotations

from dataclasses import dataclass

FP8_CHOICES = ("Disable", "Enable for SDXL", "Enable")  # A1111's fp8_storage values


@dataclass(frozen=True)
class SpeedSettings:
    fp8_storage: str = "Disable"  # fp8_storage: U-Net weights stored as float8_e4m3fn, computed in fp16/bf16
    channels_last: bool = False  # channels_last: the U-Net's convolutions in NHWC (faster on tensor cores)

    def __post_init__(self) -> None:
        if self.fp8_storage not in FP8_CHOICES:
            raise ValueError(f"fp8_storage must be one of {', '.join(FP8_CHOICES)}, got {self.fp8_storage!r}")
