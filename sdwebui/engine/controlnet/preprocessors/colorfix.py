"""tile_colorfix(+sharp): the engine side. The map is the unit image; the fix replaces the low frequencies of
each step's predicted x0 by those of the encoded unit image (so the colours stay those of the input)."""

from __future__ import annotations

import torch


def box_blur(latent: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a (2k+1)^2 window, edges replicated (the extension's blur)."""
    padded = torch.nn.functional.pad(latent, (k, k, k, k), mode="replicate")
    return torch.nn.functional.avg_pool2d(padded, (2 * k + 1, 2 * k + 1), stride=(1, 1))


def colorfix_x0(
    x0_pred: torch.Tensor,
    x0_origin: torch.Tensor,
    variation: float,
    sharpness: float | None = None,
    uncond_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """x0 with the unit image's colours: `variation` is threshold_a (doubled by the caller in hires fix).

    With `sharpness` (+sharp's threshold_b) the uncond rows (bool [B]) get a blurrier x0, which sharpens
    the CFG result.
    """
    k = int(variation)
    x0 = x0_pred - box_blur(x0_pred, k) + box_blur(x0_origin.to(x0_pred), k)
    if sharpness is not None and uncond_rows is not None:
        detail = float(sharpness) * 0.01
        softer = detail * box_blur(x0, k) + (1 - detail) * x0
        rows = uncond_rows.to(x0.device).view(-1, 1, 1, 1)
        x0 = torch.where(rows, softer, x0)
    return x0
