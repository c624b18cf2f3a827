"""Applying networks to a model in place, reversibly: ``LoraPatch(...).apply(model)`` returns the undo."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from sdwebui.models.lora.cache import DeltaCache, DeltaKey
from sdwebui.models.lora.deltas import base_delta, bias_delta
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.keys import TEXT_ENCODER_NAMES, UNET, is_text_encoder_target
from sdwebui.models.lora.modules import FullWeights, HadaWeights, LokrWeights, LoraWeights, NetworkModule
from sdwebui.models.lora.network import LoraNetwork
from sdwebui.models.model import LoadedModel

Undo = Callable[[], None]


@dataclass(frozen=True)
class NetworkWeight:
    """A network with its multipliers: ``<lora:name:te:unet>`` (``<lora:name:w>`` sets both)."""

    network: LoraNetwork
    te: float = 1.0
    unet: float = 1.0

    def multiplier(self, target: str) -> float:
        return self.te if is_text_encoder_target(target) else self.unet


def resolve_module(model: LoadedModel, target: str) -> torch.nn.Module:
    root_name, _, path = target.partition(".")
    roots: dict[str, torch.nn.Module] = {UNET: model.unet}
    roots.update(zip(TEXT_ENCODER_NAMES, model.text_encoders, strict=False))
    root = roots.get(root_name)
    candidates = [path]
    if root_name != UNET and path.startswith("text_model."):
        candidates.append(path.removeprefix("text_model."))  # transformers 5's flat CLIPTextModel
    for candidate in candidates if root is not None else []:
        try:
            return root.get_submodule(candidate)
        except AttributeError:
            continue
    raise LoraError(f"the loaded model has no module {target}")


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns as integers (NaN and -0.0 compare exactly)."""
    return tensor.view(_BITS[tensor.element_size()])


def _fingerprint(tensor: torch.Tensor) -> int:
    return int(_bits(tensor).sum().item())  # integer sums accumulate in int64


def _flat_positions(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the set elements; numpy's flatnonzero is several times faster than torch's on the CPU."""
    flat = mask.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flat.numpy()))
    return flat.nonzero().squeeze(1)


@dataclass
class _Subtracted:
    """A weight restored by subtracting its (recomputed, deterministic) difference again, then writing back
    the few elements where rounding made that inexact; the fingerprint proves the result is the original."""

    tensor: torch.Tensor
    total: Callable[[], torch.Tensor]  # the fp32 difference the patch added, computed the same way again
    index: torch.Tensor  # flat positions where (W + d) - d != W
    values: torch.Tensor  # the originals there
    fingerprint: int

    def restore(self) -> None:
        tensor = self.tensor
        tensor.copy_((tensor.to(torch.float32) - self.total()).to(tensor.dtype))
        tensor.view(-1)[self.index.to(tensor.device)] = self.values.to(tensor.device)
        if _fingerprint(tensor) != self.fingerprint:
            raise LoraError(f"a weight of shape {tuple(tensor.shape)} was not restored bit-exactly")


@dataclass
class _Restore:
    """How to write back every tensor changed: a CPU copy where the difference depends on the weight (DoRA,
    IA3, OFT...) or is small (biases), else subtraction plus a sparse correction. Called once."""

    saved: list[tuple[torch.Tensor, torch.Tensor] | _Subtracted] = field(default_factory=list)

    def keep(self, tensor: torch.Tensor) -> None:
        self.saved.append((tensor, tensor.detach().to("cpu", copy=True)))

    def add(self, tensor: torch.Tensor, total: Callable[[], torch.Tensor]) -> None:
        """``tensor += total()`` in fp32, stored in its dtype, undoable without a copy of the tensor."""
        delta = total()
        patched = (tensor.to(torch.float32) + delta).to(tensor.dtype)
        back = (patched.to(torch.float32) - delta).to(tensor.dtype)
        wrong = _flat_positions(_bits(back) != _bits(tensor))
        if tensor.numel() < 2**31:
            wrong = wrong.to(torch.int32)  # half the RAM per correction
        if wrong.numel() * (wrong.element_size() + tensor.element_size()) >= tensor.nbytes:
            self.keep(tensor)  # a difference as large as the weight: a plain copy is smaller
        else:
            values = tensor.view(-1)[wrong].to("cpu")
            self.saved.append(_Subtracted(tensor, total, wrong.to("cpu"), values, _fingerprint(tensor)))
        tensor.copy_(patched)

    @property
    def nbytes(self) -> int:
        """RAM the undo holds (CPU copies and corrections)."""
        sizes = [
            item.index.nbytes + item.values.nbytes
            if isinstance(item, _Subtracted)
            else item[1].numel() * item[1].element_size()
            for item in self.saved
        ]
        return sum(sizes)

    def __call__(self) -> None:
        with torch.no_grad():
            failure: LoraError | None = None
            while self.saved:
                item = self.saved.pop()
                if isinstance(item, _Subtracted):
                    try:
                        item.restore()
                    except LoraError as error:  # restore the others still; report it
                        failure = failure or error
                else:
                    item[0].copy_(item[1].to(item[0].device))
            if failure is not None:
                raise failure


def _weight_free(module: NetworkModule) -> bool:
    """Its difference does not depend on the weight it patches, so the undo can compute it again."""
    free = (LoraWeights, HadaWeights, LokrWeights, FullWeights)
    return module.dora_scale is None and isinstance(module.weights, free)


def _model_key(model: LoadedModel) -> str:
    return f"{model.info.filename}|{model.info.sha256 or ''}|{model.dtype}"


class LoraPatch:
    """Several networks with their weights, as one reversible patch (the model lease's Patch protocol).

    Every network's difference is computed against the unpatched weight and summed in fp32; the sum is
    written in the weight's dtype. A multiplier of 0 leaves a network's modules untouched.
    """

    def __init__(self, networks: Sequence[NetworkWeight], cache: DeltaCache | None = None):
        self.networks = list(networks)
        self.cache = cache if cache is not None else DeltaCache()

    def plan(self) -> dict[str, list[tuple[NetworkWeight, NetworkModule, float]]]:
        """target -> [(network, its module, multiplier)], leaving out zero multipliers."""
        plan: dict[str, list[tuple[NetworkWeight, NetworkModule, float]]] = {}
        for entry in self.networks:
            for target, module in entry.network.modules.items():
                multiplier = entry.multiplier(target)
                if multiplier != 0:
                    plan.setdefault(target, []).append((entry, module, multiplier))
        return plan

    def apply(self, model: LoadedModel) -> Undo:
        restore = _Restore()
        model_key = _model_key(model)
        try:
            with torch.no_grad():
                for target, entries in self.plan().items():
                    try:
                        self._patch_module(resolve_module(model, target), entries, model_key, restore)
                    except LoraError as error:  # name the file(s) as well as the module
                        files = ", ".join(sorted({str(entry.network.path) for entry, _, _ in entries}))
                        raise LoraError(f"{files}: {error}") from None
        except BaseException:
            restore()  # an interrupted apply leaves the model as it found it
            raise
        return restore

    def _patch_module(
        self,
        module: torch.nn.Module,
        entries: list[tuple[NetworkWeight, NetworkModule, float]],
        model_key: str,
        restore: _Restore,
    ) -> None:
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        bias: torch.Tensor | None = getattr(module, "bias", None)
        with_weights = [(nm, m) for _, nm, m in entries if nm.weights is not None]
        if with_weights and weight.is_contiguous() and all(_weight_free(nm) for nm, _ in with_weights):
            # rebuilt from the network's (small) factors, here and again by the undo: nothing dense kept
            restore.add(weight, lambda: _weight_free_total(weight, with_weights))
        elif with_weights:
            total = self._summed(entries, model_key, weight, lambda nm: base_delta(weight, nm), "weight")
            if total is not None:
                restore.keep(weight)
                weight.copy_((weight.to(torch.float32) + total).to(weight.dtype))
        diff_b = self._summed(entries, model_key, weight, lambda nm: bias_delta(bias, nm), "bias")
        if bias is not None and diff_b is not None:
            restore.keep(bias)
            bias.copy_((bias.to(torch.float32) + diff_b).to(bias.dtype))

    def _summed(
        self,
        entries: list[tuple[NetworkWeight, NetworkModule, float]],
        model_key: str,
        weight: torch.Tensor,
        compute: Callable[[NetworkModule], torch.Tensor | None],
        part: str,
    ) -> torch.Tensor | None:
        """sum of multiplier * cached multiplier-1 difference of `part` over the entries (None: no change)."""
        total: torch.Tensor | None = None
        for entry, network_module, multiplier in entries:
            if part == "bias" and network_module.bias_diff is None:
                continue
            key = DeltaKey(entry.network.identity, network_module.target, model_key, part)
            delta = self._cached(key, lambda nm=network_module: compute(nm), weight.device)
            if delta is not None:
                total = delta * multiplier if total is None else total + delta * multiplier
        return total

    def _cached(
        self, key: DeltaKey, compute: Callable[[], torch.Tensor | None], device: torch.device
    ) -> torch.Tensor | None:
        cached = self.cache.get(key)
        if cached is not None:
            return cached.to(device)
        delta = compute()
        if delta is not None:
            self.cache.put(key, delta.to("cpu"))
        return delta


def _weight_free_total(weight: torch.Tensor, modules: list[tuple[NetworkModule, float]]) -> torch.Tensor:
    """The fp32 sum of the differences, always in the same order (the undo relies on getting the same bits)."""
    total: torch.Tensor | None = None
    for network_module, multiplier in modules:
        delta = base_delta(weight, network_module)
        assert delta is not None  # modules with weights only
        total = delta * multiplier if total is None else total + delta * multiplier
    assert total is not None
    return total


@contextmanager
def applied(patch: LoraPatch, model: LoadedModel) -> Iterator[LoadedModel]:
    """``with applied(patch, model):`` patched inside, restored on the way out, exception or not."""
    undo = patch.apply(model)
    try:
        yield model
    finally:
        undo()
