"""The weight difference each network type makes to one module, computed densely in fp32.

``base_delta`` is the difference at multiplier 1 (alpha/rank scaling and DoRA included); the patched weight
is ``W + multiplier * base_delta``, so a new multiplier only re-scales (as A1111 scales a DoRA difference).
"""

from __future__ import annotations

import torch

from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.modules import (
    BoftWeights,
    FullWeights,
    GloraWeights,
    HadaWeights,
    IA3Weights,
    LokrWeights,
    LoraWeights,
    NetworkModule,
    OftWeights,
    Weights,
)
from sdwebui.models.lora.oft import boft_delta, oft_delta


def _f32(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device=device, dtype=torch.float32)


def _matmul_flat(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """up (out, r, ...) @ down (r, in, ...) with trailing dims flattened: (out, in * kernel)."""
    return up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)


def _tucker(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Tucker rebuild W[p, q, k, l] = sum_ij core[i, j, k, l] a[i, p] b[j, q] (LyCORIS factor layout)."""
    return torch.einsum("ijkl,ip,jq->pqkl", core, a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def _lora(w: LoraWeights, device: torch.device) -> torch.Tensor:
    up, down = _f32(w.up, device), _f32(w.down, device)
    if w.mid is None:
        return _matmul_flat(up, down)
    # LoCon Tucker: up (out, r, 1, 1) . mid (r, r, kh, kw) . down (r, in, 1, 1)
    mid = _f32(w.mid, device)
    return torch.einsum("nmkl,in,mj->ijkl", mid, up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1))


def _hada(w: HadaWeights, device: torch.device) -> torch.Tensor:
    w1a, w1b, w2a, w2b = (_f32(t, device) for t in (w.w1_a, w.w1_b, w.w2_a, w.w2_b))
    first = _tucker(_f32(w.t1, device), w1a, w1b) if w.t1 is not None else _matmul_flat(w1a, w1b)
    second = _tucker(_f32(w.t2, device), w2a, w2b) if w.t2 is not None else _matmul_flat(w2a, w2b)
    return first * second


def _lokr_factor(
    whole: torch.Tensor | None, a: torch.Tensor | None, b: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    if whole is not None:
        return _f32(whole, device)
    assert a is not None and b is not None  # checked when the module was built
    a, b = _f32(a, device), _f32(b, device)
    return _matmul_flat(a, b).reshape(a.shape[0], *b.shape[1:])


def _lokr(w: LokrWeights, device: torch.device) -> torch.Tensor:
    w1 = _lokr_factor(w.w1, w.w1_a, w.w1_b, device)
    if w.w2 is None and w.t2 is not None:
        assert w.w2_a is not None and w.w2_b is not None
        w2 = _tucker(_f32(w.t2, device), _f32(w.w2_a, device), _f32(w.w2_b, device))
    else:
        w2 = _lokr_factor(w.w2, w.w2_a, w.w2_b, device)
    while w1.dim() < w2.dim():
        w1 = w1.unsqueeze(-1)  # kron over the kernel dims too: w1's kernel is 1x1
    return torch.kron(
        w1.contiguous(), w2.contiguous()
    )  # kron views its inputs; einsum results may be strided


def _ia3(w: IA3Weights, weight: torch.Tensor) -> torch.Tensor:
    channels = weight.shape[1] if w.on_input else weight.shape[0]
    if w.weight.numel() != channels:
        side = "input" if w.on_input else "output"
        raise LoraError(f"IA3 scale has {w.weight.numel()} values, the module has {channels} {side} channels")
    shape = [1] * weight.dim()
    shape[1 if w.on_input else 0] = channels
    return weight * _f32(w.weight, weight.device).reshape(shape)


def _glora(w: GloraWeights, weight: torch.Tensor) -> torch.Tensor:
    """b2 @ b1 + W @ a2 @ a1 on the flattened weight (LyCORIS GLoRA)."""
    a1, a2, b1, b2 = (_f32(t, weight.device) for t in (w.a1, w.a2, w.b1, w.b2))
    flat = weight.reshape(weight.shape[0], -1)
    return _matmul_flat(b2, b1) + flat @ a2.reshape(a2.shape[0], -1) @ a1.reshape(a1.shape[0], -1)


def _raw_delta(weights: Weights, weight: torch.Tensor) -> torch.Tensor:
    device = weight.device
    if isinstance(weights, OftWeights):
        rescale = _f32(weights.rescale, device) if weights.rescale is not None else None
        return oft_delta(
            weight, _f32(weights.blocks, device), weights.constraint, rescale, weights.is_rotation
        )
    if isinstance(weights, BoftWeights):
        return boft_delta(weight, _f32(weights.blocks, device), weights.constraint)
    if isinstance(weights, GloraWeights):
        return _glora(weights, weight)
    if isinstance(weights, LoraWeights):
        return _lora(weights, device)
    if isinstance(weights, HadaWeights):
        return _hada(weights, device)
    if isinstance(weights, LokrWeights):
        return _lokr(weights, device)
    if isinstance(weights, IA3Weights):
        return _ia3(weights, weight)
    assert isinstance(weights, FullWeights)
    return _f32(weights.diff, device)


def _rank(weights: Weights) -> int | None:
    if isinstance(weights, LoraWeights | HadaWeights | LokrWeights | GloraWeights):
        return weights.rank
    return None


def scale_of(module: NetworkModule) -> float:
    """A1111/LyCORIS: an explicit ``scale``, else alpha / rank for low-rank types, else 1."""
    if module.scale is not None:
        return module.scale
    rank = _rank(module.weights) if module.weights is not None else None
    if module.alpha is not None and rank:
        return module.alpha / rank
    return 1.0


def _dora_per_output(module: NetworkModule, weight: torch.Tensor) -> bool:
    """Which axis the magnitude is over: PEFT's is per output row; LyCORIS's shape says it
    ((out, 1, ...) per output, (1, in, ...) per input, A1111's default)."""
    scale = module.dora_scale
    assert scale is not None
    if module.dora_on_output is not None:
        return module.dora_on_output
    out, inp = weight.shape[0], weight.shape[1]
    if scale.dim() == 1:
        return True
    if scale.shape[0] == out and scale.numel() == out and scale.shape[0] != 1:
        return True
    if scale.dim() >= 2 and scale.shape[1] == inp and scale.numel() == inp:
        return False
    raise LoraError(f"{module.network_key}: dora_scale of shape {tuple(scale.shape)} fits neither axis")


def _weight_decompose(module: NetworkModule, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """DoRA: W' = m * (W + dW) / ||W + dW||, the norm over all axes but the magnitude's; returns W' - W."""
    merged = weight + delta
    ones = [1] * (weight.dim() - 1)
    if _dora_per_output(module, weight):
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(merged.shape[0], *ones)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        norm = norm.reshape(merged.shape[1], *ones).transpose(0, 1)
    magnitude = _f32(module.dora_scale, weight.device).reshape(norm.shape)  # type: ignore[arg-type]
    return merged * (magnitude / norm) - weight


def _fit(delta: torch.Tensor, weight: torch.Tensor, module: NetworkModule) -> torch.Tensor:
    if delta.shape == weight.shape:
        return delta
    if delta.numel() == weight.numel():  # linear-shaped LoRA on a 1x1 conv (SD1 proj_in) or the reverse
        return delta.reshape(weight.shape)
    raise LoraError(
        f"{module.network_key}: makes a {tuple(delta.shape)} difference for {module.target} "
        f"of shape {tuple(weight.shape)} (a network for another model?)"
    )


def base_delta(weight: torch.Tensor, module: NetworkModule) -> torch.Tensor | None:
    """fp32 weight difference at multiplier 1, on the weight's device; None when only the bias changes."""
    if module.weights is None:
        return None
    plain = module.weights
    if (
        isinstance(plain, LoraWeights)
        and plain.mid is None
        and module.weight_bias is None
        and module.dora_scale is None
    ):
        # the scale goes into the small factor: no pass over the dense product
        up = _f32(plain.up, weight.device) * scale_of(module)
        return _fit(_matmul_flat(up, _f32(plain.down, weight.device)), weight, module)
    if module.dora_scale is not None or isinstance(
        module.weights, IA3Weights | OftWeights | BoftWeights | GloraWeights
    ):
        weight = weight.detach().to(torch.float32)  # the difference depends on the weight itself
    delta = _fit(_raw_delta(module.weights, weight), weight, module)
    if module.weight_bias is not None:
        delta = delta + _fit(_f32(module.weight_bias, weight.device), weight, module)
    delta = delta * scale_of(module)
    if module.dora_scale is not None:
        delta = _weight_decompose(module, weight, delta)
    return delta


def compute_delta(
    module_weight: torch.Tensor, network_module: NetworkModule, multiplier: float
) -> torch.Tensor:
    """The fp32 difference ``network_module`` makes to ``module_weight`` at ``multiplier``."""
    delta = base_delta(module_weight, network_module)
    if delta is None:
        return torch.zeros_like(module_weight, dtype=torch.float32)
    return delta * multiplier


def bias_delta(module_bias: torch.Tensor | None, network_module: NetworkModule) -> torch.Tensor | None:
    """fp32 bias difference at multiplier 1 (``diff_b``), or None."""
    if network_module.bias_diff is None:
        return None
    if module_bias is None:
        raise LoraError(f"{network_module.network_key}: has diff_b but {network_module.target} has no bias")
    diff = _f32(network_module.bias_diff, module_bias.device)
    if diff.numel() != module_bias.numel():
        raise LoraError(
            f"{network_module.network_key}: diff_b of {diff.numel()} values for a bias of {module_bias.numel()}"
        )
    return diff.reshape(module_bias.shape)
