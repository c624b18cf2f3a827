"""Token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) in the U-Net's self-attention.

At the highest-resolution layers, the tokens of each 2x2 patch but one (the destination) are matched to their
most similar destination token by cosine similarity; the `ratio` x N best-matched ones are averaged into their
destinations before attention and copied back after it. The destination of each patch is its first token
(tomesd's no-random variant), so images stay reproducible. A1111's settings: token_merging_ratio (first pass),
token_merging_ratio_hr (hires pass, when non-zero). Installed on the attn1 processors for one pass only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

Merge = Callable[[torch.Tensor], torch.Tensor]
STRIDE = 2  # one destination token per 2x2 patch


def _nothing(x: torch.Tensor) -> torch.Tensor:
    return x


def _patch_destinations(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the source and destination tokens of an h x w grid (destination: each patch's first)."""
    hsy, wsx = h // STRIDE, w // STRIDE
    marks = torch.zeros(hsy, wsx, STRIDE * STRIDE, device=device, dtype=torch.int64)
    marks[..., 0] = -1
    marks = marks.view(hsy, wsx, STRIDE, STRIDE).transpose(1, 2).reshape(hsy * STRIDE, wsx * STRIDE)
    grid = torch.zeros(h, w, device=device, dtype=torch.int64)
    grid[: hsy * STRIDE, : wsx * STRIDE] = marks
    order = grid.reshape(1, -1, 1).argsort(dim=1)  # destinations (-1) first
    count = hsy * wsx
    return order[:, count:, :], order[:, :count, :]


def bipartite_merge(metric: torch.Tensor, h: int, w: int, r: int) -> tuple[Merge, Merge]:
    """(merge, unmerge) for tokens [B, N, C] of an h x w grid, merging `r` source tokens away."""
    batch, tokens, _ = metric.shape
    if r <= 0 or h < STRIDE or w < STRIDE:
        return _nothing, _nothing
    src_idx, dst_idx = _patch_destinations(h, w, metric.device)
    n_dst = dst_idx.shape[1]

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[-1]
        return (
            x.gather(1, src_idx.expand(batch, tokens - n_dst, c)),
            x.gather(1, dst_idx.expand(batch, n_dst, c)),
        )

    with torch.no_grad():
        normed = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(normed)
        best, best_dst = (a @ b.transpose(-1, -2)).max(dim=-1)
        r = min(a.shape[1], r)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        kept, merged = ranked[..., r:, :], ranked[..., :r, :]
        into = best_dst[..., None].gather(-2, merged)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = split(x)
        c = x.shape[-1]
        unmerged = src.gather(-2, kept.expand(batch, kept.shape[1], c))
        moved = src.gather(-2, merged.expand(batch, r, c))
        dst = dst.scatter_reduce(-2, into.expand(batch, r, c), moved, reduce="mean")
        return torch.cat([unmerged, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        n_kept, c = kept.shape[1], x.shape[-1]
        unmerged, dst = x[..., :n_kept, :], x[..., n_kept:, :]
        moved = dst.gather(-2, into.expand(batch, r, c))
        out = torch.zeros(batch, tokens, c, device=x.device, dtype=x.dtype)
        out.scatter_(-2, dst_idx.expand(batch, n_dst, c), dst)
        sources = src_idx.expand(batch, src_idx.shape[1], 1)
        out.scatter_(-2, sources.gather(1, kept).expand(batch, n_kept, c), unmerged)
        out.scatter_(-2, sources.gather(1, merged).expand(batch, r, c), moved)
        return out

    return merge, unmerge


class MergingProcessor:
    """Wraps a self-attention processor: merged tokens in, unmerged out (only at the full-resolution grid)."""

    def __init__(self, inner: Any, ratio: float, height: int, width: int):
        self.inner, self.ratio, self.height, self.width = inner, ratio, height, width
        self.merged_calls = 0  # how many attention calls ran on merged tokens (the tests read it)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs):
        tokens = hidden_states.shape[1] if hidden_states.ndim == 3 else 0
        if encoder_hidden_states is not None or tokens != self.height * self.width:
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        merge, unmerge = bipartite_merge(hidden_states, self.height, self.width, int(tokens * self.ratio))
        self.merged_calls += 1
        return unmerge(self.inner(attn, merge(hidden_states), None, *args, **kwargs))


@contextlib.contextmanager
def token_merging(unet: torch.nn.Module, ratio: float, latent_h: int, latent_w: int) -> Iterator[list]:
    """ToMe on `unet`'s self-attention (attn1) processors while open; yields the wrappers."""
    processors = dict(getattr(unet, "attn_processors", {}) or {})
    if ratio <= 0 or not processors:
        yield []
        return
    wrapped = dict(processors)
    merging = []
    for name, processor in processors.items():
        if name.endswith("attn1.processor"):
            wrapped[name] = MergingProcessor(processor, ratio, latent_h, latent_w)
            merging.append(wrapped[name])
    unet.set_attn_processor(wrapped)
    try:
        yield merging
    finally:
        unet.set_attn_processor(processors)
