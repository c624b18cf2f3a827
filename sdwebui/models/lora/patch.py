"""Applying networks to a model in place, reversibly: ``LoraPatch(...).apply(model)`` returns the undo."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from sdwebui.models.lora.cache import DeltaCache, DeltaKey
from sdwebui.models.lora.deltas import base_delta, bias_delta
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.keys import TEXT_ENCODER_NAMES, UNET, is_text_encoder_target
from sdwebui.models.lora.modules import FullWeights, HadaWeights, LokrWeights, LoraWeights, NetworkModule
from sdwebui.models.lora.network import LoraNetwork
from sdwebui.models.lora.undo import Scratch, Undo
from sdwebui.models.model import LoadedModel


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

    def __init__(
        self, networks: Sequence[NetworkWeight], cache: DeltaCache | None = None, by_subtraction: bool = False
    ):
        self.networks = list(networks)
        self.cache = cache if cache is not None else DeltaCache()
        self.by_subtraction = by_subtraction  # undo weights in RAM as on an accelerator (holds no copy)

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
        undo = Undo(by_subtraction=self.by_subtraction, budget=self.cache)
        model_key = _model_key(model)
        try:
            with torch.no_grad():
                for target, entries in self.plan().items():
                    try:
                        self._patch_module(target, resolve_module(model, target), entries, model_key, undo)
                    except LoraError as error:  # name the file(s) as well as the module
                        files = ", ".join(sorted({str(entry.network.path) for entry, _, _ in entries}))
                        raise LoraError(f"{files}: {error}") from None
        except BaseException:
            undo()  # an interrupted apply leaves the model as it found it
            raise
        undo.scratch = Scratch()  # not held between jobs
        return undo

    def reweight(self, undo: Undo) -> bool:
        """Move a model `undo` came from (this patch's networks at other multipliers) to these multipliers in
        place, one step per weight; False when the networks or targets differ (then undo and apply)."""
        targets = {
            target: [
                ((entry.network.identity, module.target), multiplier) for entry, module, multiplier in entries
            ]
            for target, entries in self.plan().items()
        }
        return undo.reweight(targets)

    def _patch_module(
        self,
        target: str,
        module: torch.nn.Module,
        entries: list[tuple[NetworkWeight, NetworkModule, float]],
        model_key: str,
        undo: Undo,
    ) -> None:
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        bias: torch.Tensor | None = getattr(module, "bias", None)
        with_weights = [(e, nm, m) for e, nm, m in entries if nm.weights is not None]
        if with_weights and weight.is_contiguous() and all(_weight_free(nm) for _, nm, _ in with_weights):
            terms = [
                ((e.network.identity, nm.target), self._weight_free_delta(e, nm, model_key, weight), m)
                for e, nm, m in with_weights
            ]
            undo.add(target, weight, terms)
        elif with_weights:
            total = self._summed(entries, model_key, weight, lambda nm: base_delta(weight, nm), "weight")
            if total is not None:
                undo.keep(weight)
                weight.copy_((weight.to(torch.float32) + total).to(weight.dtype))
        diff_b = self._summed(entries, model_key, weight, lambda nm: bias_delta(bias, nm), "bias")
        if bias is not None and diff_b is not None:
            undo.keep(bias)
            bias.copy_((bias.to(torch.float32) + diff_b).to(bias.dtype))

    def _weight_free_delta(
        self, entry: NetworkWeight, network_module: NetworkModule, model_key: str, weight: torch.Tensor
    ) -> Callable[[], torch.Tensor]:
        """The multiplier-1 difference, rebuilt from the factors on demand. On the CPU, where that product is
        the dear part, it is cached while the cache has room (never evicting: a model-sized scan through an
        LRU would only push out every entry before its reuse); on a GPU the product is cheaper than a copy."""
        key = DeltaKey(entry.network.identity, network_module.target, model_key)

        def delta() -> torch.Tensor:
            if weight.device.type != "cpu":
                return _checked(base_delta(weight, network_module))
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            computed = _checked(base_delta(weight, network_module))
            self.cache.put_if_room(key, computed)
            return computed

        return delta

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


def _checked(delta: torch.Tensor | None) -> torch.Tensor:
    assert delta is not None  # modules with weights only
    return delta


@contextmanager
def applied(patch: LoraPatch, model: LoadedModel) -> Iterator[LoadedModel]:
    """``with applied(patch, model):`` patched inside, restored on the way out, exception or not."""
    undo = patch.apply(model)
    try:
        yield model
    finally:
        undo()
