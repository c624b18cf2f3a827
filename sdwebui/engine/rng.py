"""Per-image noise on the CPU, as A1111 with its "CPU" random number source.

Image k of a job is seeded with its own `torch.Generator("cpu")`, so its initial noise and every later
ancestral/SDE noise draw are the same whatever the batch size, the batch position or the device.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

SEED_LIMIT = 2**32


def resolve_seed(seed: int | float | str | None) -> int:
    """-1 (or None/empty) -> a random seed in [0, 2^32); anything else must be an integer seed."""
    if seed is None or seed == "":
        seed = -1
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    if value == -1:
        return random.randrange(SEED_LIMIT)
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be -1 or in [0, 2^32), got {value}")
    return value


def create_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


def randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise; from `generator` if given (it advances), else from a fresh one seeded `seed`."""
    if generator is None:
        generator = create_generator(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of two noise tensors, A1111's variation-seed formula (norms along dim 1)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (
            1 - val
        )  # A1111's near-parallel shortcut, kept verbatim for identical noise
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(
        1
    ) * high


def _check_shape(shape_chw: Sequence[int]) -> tuple[int, int, int]:
    if len(shape_chw) != 3 or any(int(d) <= 0 for d in shape_chw):
        raise ValueError(
            f"noise shape must be (channels, height, width) with positive sizes, got {tuple(shape_chw)}"
        )
    return int(shape_chw[0]), int(shape_chw[1]), int(shape_chw[2])


def _first_noise(
    shape: tuple[int, int, int],
    seed: int,
    generator: torch.Generator,
    subseed: int,
    subseed_strength: float,
    seed_resize_from_h: int,
    seed_resize_from_w: int,
    vae_scale_factor: int,
) -> torch.Tensor:
    """One image's initial noise; draws from `generator` exactly as A1111's ImageRNG.first() does."""
    resized = seed_resize_from_h > 0 and seed_resize_from_w > 0
    noise_shape = (
        (shape[0], seed_resize_from_h // vae_scale_factor, seed_resize_from_w // vae_scale_factor)
        if resized
        else shape
    )
    if resized and (noise_shape[1] <= 0 or noise_shape[2] <= 0):
        raise ValueError(
            f"seed_resize_from_w/h ({seed_resize_from_w}x{seed_resize_from_h}) must be at least {vae_scale_factor}"
        )
    subnoise = None
    if subseed_strength != 0:
        if subseed < 0:
            raise ValueError("subseed must be resolved (resolve_seed) before drawing variation noise")
        subnoise = randn(subseed, noise_shape)
    noise = randn(seed, noise_shape) if noise_shape != shape else randn(seed, shape, generator=generator)
    if subnoise is not None:
        noise = slerp(subseed_strength, noise, subnoise)
    if noise_shape != shape:
        # Paste the "from"-size noise centred into noise of the real size, so composition survives resizing.
        x = randn(seed, shape, generator=generator)
        dx = (shape[2] - noise_shape[2]) // 2
        dy = (shape[1] - noise_shape[1]) // 2
        w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
        h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
        tx, ty = max(dx, 0), max(dy, 0)
        sx, sy = max(-dx, 0), max(-dy, 0)
        x[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
        noise = x
    return noise


class ImageRNG:
    """Noise source of one batch: one CPU generator per image.

    `next()` returns the initial noise first, then fresh noise for each ancestral/SDE step; `generators`
    can be passed as diffusers' `generator=` (a list draws per image), continuing the same streams.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = -1,
        seed_resize_from_w: int = -1,
        vae_scale_factor: int = 8,
        eta_noise_seed_delta: int = 0,
    ):
        if not seeds:
            raise ValueError("ImageRNG needs at least one seed")
        self.shape = _check_shape(shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = [int(s) for s in subseeds] if subseeds is not None else None
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.vae_scale_factor = vae_scale_factor
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.generators = [create_generator(s) for s in self.seeds]
        self._is_first = True

    def first(self) -> torch.Tensor:
        """Initial noise [B, C, H, W]."""
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators, strict=True)):
            # A1111 uses subseed 0 for images past the end of the subseed list
            subseed = 0 if self.subseeds is None or i >= len(self.subseeds) else self.subseeds[i]
            xs.append(
                _first_noise(
                    self.shape,
                    seed,
                    generator,
                    subseed,
                    self.subseed_strength if self.subseeds is not None else 0.0,
                    self.seed_resize_from_h,
                    self.seed_resize_from_w,
                    self.vae_scale_factor,
                )
            )
        if self.eta_noise_seed_delta:
            # A1111's "Eta noise seed delta": step noise comes from seed + delta, not the initial stream
            self.generators = [create_generator(s + self.eta_noise_seed_delta) for s in self.seeds]
        self._is_first = False
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        """The initial noise on the first call, then per-image step noise [B, C, H, W]."""
        if self._is_first:
            return self.first()
        return torch.stack([randn(0, self.shape, generator=g) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Step noise shaped and placed like `x` (a [B, C, H, W] batch of this RNG's images)."""
        if x.shape[0] != len(self.seeds) or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"randn_like: expected shape {(len(self.seeds), *self.shape)}, got {tuple(x.shape)}"
            )
        return self.next().to(device=x.device, dtype=x.dtype)
