"""Speed and weight-size settings of a job (option names in comments)."""

from __future__ import annotations

from dataclasses import dataclass

FP8_CHOICES = ("Disable", "Enable for SDXL", "Enable")  # A1111's fp8_storage values


@dataclass(frozen=True)
class SpeedSettings:
    fp8_storage: str = "Disable"  # fp8_storage: U-Net weights stored as float8_e4m3fn, computed in fp16/bf16
    channels_last: bool = False  # channels_last: the U-Net's convolutions in NHWC (faster on tensor cores)
    cudnn_benchmark: bool = False  # cudnn_benchmark: cuDNN picks the fastest convolution kernels per shape
    compile: bool = False  # unet_compile: torch.compile of the U-Net, once per shape, kept across jobs
    compile_backend: str = "inductor"  # torch.compile's backend ("eager"/"aot_eager" check the tracing only)
    step_cache_threshold: float = 0.0  # step_cache_threshold: DiT first-block cache (0 = off; 0.1-0.3 usual)
    token_merging_ratio: float = 0.0  # token_merging_ratio: ToMe's share of self-attention tokens merged
    token_merging_ratio_hr: float = 0.0  # token_merging_ratio_hr: the hires pass's ratio, when non-zero

    def merging_ratio(self, pass_index: int) -> float:
        """A1111: the hires ratio only applies if non-zero, and then overrides the first one."""
        if pass_index > 0 and self.token_merging_ratio_hr > 0:
            return self.token_merging_ratio_hr
        return self.token_merging_ratio

    def __post_init__(self) -> None:
        if self.fp8_storage not in FP8_CHOICES:
            raise ValueError(f"fp8_storage must be one of {', '.join(FP8_CHOICES)}, got {self.fp8_storage!r}")
        for name in ("token_merging_ratio", "token_merging_ratio_hr"):
            if not 0.0 <= getattr(self, name) <= 0.9:
                raise ValueError(f"{name} must be between 0 and 0.9")
