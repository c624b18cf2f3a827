"""Applying networks to a model in place, reversibly: ``LoraPatch(...).apply(model)`` returns the undo."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from sdwebui.models.lora.cache import DeltaCache, DeltaKey
from sdwebui.models.lora.deltas import base_delta, bias_delta
from sdwebui.models.lora.errors import LoraError
from sdwebui.models.lora.keys import TEXT_ENCODER_NAMES, UNET, is_text_encoder_target
from sdwebui.models.lora.modules import NetworkModule
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


@dataclass
class _Restore:
    """Bit-exact CPU copies of every tensor changed; calling it writes them back (once)."""

    saved: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def keep(self, tensor: torch.Tensor) -> None:
        self.saved.append((tensor, tensor.detach().to("cpu", copy=True)))

    def __call__(self) -> None:
        with torch.no_grad():
            while self.saved:
                tensor, original = self.saved.pop()
                tensor.copy_(original.to(tensor.device))


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
        weight_sum: torch.Tensor | None = None
        bias_sum: torch.Tensor | None = None
        for entry, network_module, multiplier in entries:
            key = DeltaKey(entry.network.identity, network_module.target, model_key)
            delta = self._cached(key, lambda nm=network_module: base_delta(weight, nm), weight.device)
            if delta is not None:
                weight_sum = delta * multiplier if weight_sum is None else weight_sum + delta * multiplier
            if network_module.bias_diff is None:
                continue
            bias_key = DeltaKey(entry.network.identity, network_module.target, model_key, "bias")
            diff_b = self._cached(bias_key, lambda nm=network_module: bias_delta(bias, nm), weight.device)
            if diff_b is not None:
                bias_sum = diff_b * multiplier if bias_sum is None else bias_sum + diff_b * multiplier
        for tensor, total in ((weight, weight_sum), (bias, bias_sum)):
            if tensor is not None and total is not None:
                restore.keep(tensor)
                tensor.copy_((tensor.to(torch.float32) + total).to(tensor.dtype))

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


@contextmanager
def applied(patch: LoraPatch, model: LoadedModel) -> Iterator[LoadedModel]:
    """``with applied(patch, model):`` patched inside, restored on the way out, exception or not."""
    undo = patch.apply(model)
    try:
        yield model
    finally:
        undo()
