"""A step cache for DiT families (the step_cache_threshold setting): diffusers' First Block Cache. When the
first transformer block's output changed by less than `threshold` (relative) since the previous step, the
other blocks' residual of that step is reused instead of computed. Applies to any diffusers transformer model
(Flux, SD3, ...: a CacheMixin with transformer blocks); a U-Net is left alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def is_cacheable(module: object) -> bool:
    from diffusers.hooks.first_block_cache import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    from diffusers.models.cache_utils import CacheMixin

    if not isinstance(module, CacheMixin) or not isinstance(module, torch.nn.Module):
        return False
    return any(
        name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
        for name, child in module.named_children()
    )


@contextlib.contextmanager
def step_cache(module: object, threshold: float) -> Iterator[bool]:
    """First Block Cache on `module` for the duration; yields whether it applies."""
    if threshold <= 0 or not is_cacheable(module):
        yield False
        return
    from diffusers.hooks import FirstBlockCacheConfig

    module.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with module.cache_context("job"):
            yield True
    finally:
        module.disable_cache()
