"""Typed records of one network's weights for one target module, built from a file's key parts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdwebui.models.lora.errors import LoraError


@dataclass(frozen=True)
class LoraWeights:
    """LoRA / LoCon: up (out, r[, 1, 1]), down (r, in[, kh, kw]), optional Tucker mid (r, r, kh, kw)."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class HadaWeights:
    """LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) (Hadamard product), or Tucker t1/t2 with a/b as factor matrices."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return self.w1_b.shape[0]


@dataclass(frozen=True)
class LokrWeights:
    """LoKr: kron(w1, w2), each factor whole or low-rank (a @ b); w2 optionally Tucker (t2)."""

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def rank(self) -> int | None:
        """Only low-rank factors have a rank; alpha/rank scaling applies only then (as LyCORIS)."""
        if self.w2_b is not None:
            return self.w2_b.shape[0]
        return self.w1_b.shape[0] if self.w1_b is not None else None


@dataclass(frozen=True)
class IA3Weights:
    """IA3: a learned per-channel scale of the weight: out channels, or in channels when on_input."""

    weight: torch.Tensor
    on_input: bool = False


@dataclass(frozen=True)
class OftWeights:
    """OFT: the weight's output rows rotated block by block, W' = blockdiag(R_k)^T W, with
    R = (I + Q)(I - Q)^-1 (Cayley) of Q = B - B^T from ``oft_blocks`` (blocks, size, size); ``alpha`` is a
    norm constraint (||Q|| <= alpha * out channels), not a scale. ``oft_diag`` (old LyCORIS) holds R itself.
    ``rescale`` (out, 1...) multiplies the rotated weight."""

    blocks: torch.Tensor
    constraint: float | None = None
    rescale: torch.Tensor | None = None
    is_rotation: bool = False


@dataclass(frozen=True)
class BoftWeights:
    """BOFT: ``oft_blocks`` (m, blocks, size, size), m Cayley rotations applied one after another, each to
    the output rows in butterfly order (step i pairs rows 2**i * size/2 apart)."""

    blocks: torch.Tensor
    constraint: float | None = None


@dataclass(frozen=True)
class GloraWeights:
    """GLoRA: dW = b2 @ b1 + W @ a2 @ a1 (weights flattened to (out, in * kernel)); scaled by alpha / rank."""

    a1: torch.Tensor  # (r, in)
    a2: torch.Tensor  # (in, r)
    b1: torch.Tensor  # (r, in)
    b2: torch.Tensor  # (out, r)

    @property
    def rank(self) -> int:
        return self.a1.shape[0]


@dataclass(frozen=True)
class FullWeights:
    """A full weight difference (``diff``, or ``w_norm`` for a norm layer)."""

    diff: torch.Tensor


Weights = (
    LoraWeights
    | HadaWeights
    | LokrWeights
    | IA3Weights
    | OftWeights
    | BoftWeights
    | GloraWeights
    | FullWeights
)


@dataclass(frozen=True)
class NetworkModule:
    """One network's change to one target module."""

    network_key: str  # the name in the file
    target: str  # e.g. "unet.down_blocks.0.attentions.0.proj_in"
    weights: Weights | None  # None: only a bias difference
    alpha: float | None = None
    scale: float | None = None  # an explicit scale overrides alpha / rank
    dora_scale: torch.Tensor | None = None
    dora_on_output: bool | None = None  # None: decided by dora_scale's shape
    bias_diff: torch.Tensor | None = None  # ``diff_b``: added to the module's bias
    weight_bias: torch.Tensor | None = None  # LyCORIS ``bias``: added to the weight difference

    @property
    def kind(self) -> str:
        return type(self.weights).__name__.removesuffix("Weights").lower() if self.weights else "bias"

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(self))


def _tensors(module: NetworkModule) -> list[torch.Tensor]:
    found = [module.dora_scale, module.bias_diff, module.weight_bias]
    if module.weights is not None:
        found += [v for v in vars(module.weights).values() if isinstance(v, torch.Tensor)]
    return [t for t in found if t is not None]


_HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


@dataclass
class _Parts:
    """The tensors of one network key, consumed as they are recognised so leftovers can be named."""

    key: str
    tensors: dict[str, torch.Tensor]
    used: set[str] = field(default_factory=set)

    def get(self, part: str) -> torch.Tensor | None:
        if part in self.tensors:
            self.used.add(part)
            return self.tensors[part]
        return None

    def need(self, part: str) -> torch.Tensor:
        tensor = self.get(part)
        if tensor is None:
            raise LoraError(f"{self.key}: missing {part!r} (has {', '.join(sorted(self.tensors))})")
        return tensor


def _weights(parts: _Parts) -> Weights | None:
    names = set(parts.tensors)
    if "lora_up.weight" in names or "lora_down.weight" in names:
        return LoraWeights(
            parts.need("lora_up.weight"), parts.need("lora_down.weight"), parts.get("lora_mid.weight")
        )
    if names & set(_HADA):
        w1a, w1b, w2a, w2b = (parts.need(name) for name in _HADA)
        return HadaWeights(w1a, w1b, w2a, w2b, parts.get("hada_t1"), parts.get("hada_t2"))
    if names & set(_LOKR):
        lokr = LokrWeights(*(parts.get(name) for name in _LOKR))
        if lokr.w1 is None and (lokr.w1_a is None or lokr.w1_b is None):
            raise LoraError(f"{parts.key}: LoKr needs lokr_w1 or lokr_w1_a + lokr_w1_b")
        if lokr.w2 is None and (lokr.w2_a is None or lokr.w2_b is None):
            raise LoraError(f"{parts.key}: LoKr needs lokr_w2 or lokr_w2_a + lokr_w2_b")
        return lokr
    if "oft_blocks" in names or "oft_diag" in names:
        return _oft(parts)
    if "a1.weight" in names:
        a1, a2, b1, b2 = (parts.need(f"{name}.weight") for name in ("a1", "a2", "b1", "b2"))
        return GloraWeights(a1, a2, b1, b2)
    if "weight" in names:
        on_input = parts.get("on_input")
        return IA3Weights(parts.need("weight"), bool(on_input.item()) if on_input is not None else False)
    if "diff" in names:
        return FullWeights(parts.need("diff"))
    if "w_norm" in names:  # LyCORIS trained norm layers: a full difference of the norm's weight
        return FullWeights(parts.need("w_norm"))
    return None


def _oft(parts: _Parts) -> OftWeights | BoftWeights:
    constraint = _scalar(parts.get("alpha"))  # OFT's alpha bounds the rotation; it is no scale
    if "oft_diag" in parts.tensors:
        return OftWeights(parts.need("oft_diag"), None, parts.get("rescale"), is_rotation=True)
    blocks = parts.need("oft_blocks")
    if blocks.dim() == 3 and blocks.shape[1] == blocks.shape[2]:
        return OftWeights(blocks, constraint, parts.get("rescale"))
    if blocks.dim() == 4 and blocks.shape[2] == blocks.shape[3] and blocks.shape[2] % 2 == 0:
        return BoftWeights(blocks, constraint)
    raise LoraError(f"{parts.key}: oft_blocks of shape {tuple(blocks.shape)} is neither OFT nor BOFT")


def _scalar(tensor: torch.Tensor | None) -> float | None:
    return float(tensor.float().item()) if tensor is not None else None


def _first(*tensors: torch.Tensor | None) -> torch.Tensor | None:
    return next((t for t in tensors if t is not None), None)


def build_module(network_key: str, target: str, tensors: dict[str, torch.Tensor]) -> NetworkModule:
    """The record for one key's parts; parts of no known type are an error naming them."""
    parts = _Parts(network_key, tensors)
    weights = _weights(parts)
    magnitude = parts.get("peft_magnitude")
    module = NetworkModule(
        network_key=network_key,
        target=target,
        weights=weights,
        alpha=_scalar(parts.get("alpha")),
        scale=_scalar(parts.get("scale")),
        dora_scale=magnitude if magnitude is not None else parts.get("dora_scale"),
        dora_on_output=True if magnitude is not None else None,  # PEFT's magnitude is per output channel
        bias_diff=_first(parts.get("diff_b"), parts.get("b_norm")),
        weight_bias=parts.get("bias"),
    )
    leftover = sorted(set(tensors) - parts.used)
    if leftover:
        raise LoraError(f"{network_key}: unsupported network parts {', '.join(leftover)}")
    if weights is None and module.bias_diff is None:
        raise LoraError(f"{network_key}: no weights (has {', '.join(sorted(tensors))})")
    return module
