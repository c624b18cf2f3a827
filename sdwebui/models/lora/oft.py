"""OFT and BOFT (orthogonal fine-tuning, LyCORIS's diag-oft / butterfly OFT): the weight's output rows
rotated by learned orthogonal blocks. The difference is ``W' - W`` at full strength; the patch scales it by
the multiplier as A1111 does (LyCORIS scales the first rotation toward I instead: the two agree at 1, and
here a multiplier of 0 leaves the weight untouched).
"""

from __future__ import annotations

import torch

from sdwebui.models.lora.errors import LoraError


def cayley(blocks: torch.Tensor, constraint: float | None, out_channels: int) -> torch.Tensor:
    """Orthogonal R = (I + Q)(I - Q)^-1 of the skew-symmetric Q = B - B^T, per block (last two dims);
    with a constraint, Q is shrunk to the norm ``constraint * out_channels`` when it is larger."""
    q = blocks - blocks.transpose(-1, -2)
    if constraint:
        limit = constraint * out_channels
        norm = torch.linalg.vector_norm(q)
        if norm > limit:
            q = q * (limit / norm)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    return torch.linalg.solve((eye - q).transpose(-1, -2), (eye + q).transpose(-1, -2)).transpose(-1, -2)


def _rows(weight: torch.Tensor, count: int, size: int, what: str) -> torch.Tensor:
    if count * size != weight.shape[0]:
        raise LoraError(f"{what} of {count} blocks of {size} do not cover the {weight.shape[0]} output rows")
    return weight.reshape(count, size, -1)


def oft_delta(
    weight: torch.Tensor,
    blocks: torch.Tensor,
    constraint: float | None,
    rescale: torch.Tensor | None,
    is_rotation: bool,
) -> torch.Tensor:
    """W' - W with W'_k = R_k^T W_k for each block k of output rows (times ``rescale`` per row)."""
    rotation = blocks if is_rotation else cayley(blocks, constraint, weight.shape[0])
    rows = _rows(weight, rotation.shape[0], rotation.shape[1], "OFT")
    rotated = torch.einsum("knm,knr->kmr", rotation, rows).reshape(weight.shape)
    if rescale is not None:
        rotated = rotated * rescale.to(rotated).reshape(weight.shape[0], *([1] * (weight.dim() - 1)))
    return rotated - weight


def boft_delta(weight: torch.Tensor, blocks: torch.Tensor, constraint: float | None) -> torch.Tensor:
    """W' - W for BOFT: for step i = 0..m-1 the rows are regrouped so that rows ``2**i * size/2`` apart meet
    in a block, each block is multiplied by its R (``R @ rows``), and the rows are put back in order."""
    steps, count, size, _ = blocks.shape
    rotation = cayley(blocks, constraint, weight.shape[0])
    out = weight.shape[0]
    x = _rows(weight, count, size, "BOFT").reshape(out, -1)
    for step in range(steps):
        stride = 2**step * (size // 2)
        if out % (2 * stride):
            raise LoraError(f"BOFT step {step} needs the {out} output rows in groups of {2 * stride}")
        grouped = x.reshape(out // (2 * stride), 2, stride, -1).transpose(1, 2).reshape(count, size, -1)
        turned = torch.einsum("dij,djr->dir", rotation[step], grouped)
        x = turned.reshape(out // (2 * stride), stride, 2, -1).transpose(1, 2).reshape(out, -1)
    return x.reshape(weight.shape) - weight
