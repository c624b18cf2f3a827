"""The memory and speed settings a job runs with (flags and options, copied into EngineSettings)."""

from __future__ import annotations

from dataclasses import dataclass

AUTO, GPU, MEDVRAM, MEDVRAM_SDXL, LOWVRAM = "auto", "gpu", "medvram", "medvram-sdxl", "lowvram"
MODES = (AUTO, GPU, MEDVRAM, MEDVRAM_SDXL, LOWVRAM)
MOVING_MODES = (MEDVRAM, MEDVRAM_SDXL, LOWVRAM)  # modes whose jobs move components: load them CPU-first
TILING_AUTO, TILING_ALWAYS, TILING_NEVER = "auto", "always", "never"
TILING_CHOICES = (TILING_AUTO, TILING_ALWAYS, TILING_NEVER)


@dataclass(frozen=True)
class MemorySettings:
    """How the job's components use device memory (option names in comments)."""

    mode: str = AUTO  # memory_mode; --medvram / --medvram-sdxl / --lowvram set it at start-up
    gpu_weights_mb: int = 0  # gpu_weights_mb: most MB of weights kept on the device in "auto"; 0 = what fits
    vae_tiling: str = TILING_AUTO  # vae_tiling: "auto" tiles large images and after an out-of-memory error
    vae_tiling_min_pixels: int = (
        2048 * 2048
    )  # vae_tiling_min_pixels: "auto" tiles images of this size or more
    auto_vae_precision: bool = True  # A1111's auto_vae_precision: NaN in a half VAE -> decode again in fp32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"memory mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.vae_tiling not in TILING_CHOICES:
            raise ValueError(
                f"vae_tiling must be one of {', '.join(TILING_CHOICES)}, got {self.vae_tiling!r}"
            )
        if self.gpu_weights_mb < 0:
            raise ValueError("gpu_weights_mb must be >= 0")
