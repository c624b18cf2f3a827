"""Reversible per-job changes to a model: `patch.apply(model)` changes it and returns the undo.

A patch works on the job's view of a shared model (sdwebui.models.lease.ModelLease). Attribute patches
(the VAE override) replace an attribute of the view, so the shared model never sees them. Weight patches
(LoRA tomorrow) change parameters in place, because a copy of a U-Net per job costs gigabytes: they run
under the lease's lock and keep a bit-exact copy of each tensor they change, which the undo writes back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from sdwebui.models.model import LoadedModel

Undo = Callable[[], None]


class Patch(Protocol):
    """One reversible change; `apply` must leave the model unchanged when it raises."""

    def apply(self, model: LoadedModel) -> Undo: ...


@dataclass(frozen=True)
class VaeOverride:
    """The job decodes (and encodes) with another VAE: `vae` None = the checkpoint's own."""

    name: str | None  # the VAE's listed name, None = the checkpoint's own
    vae: Any  # diffusers.AutoencoderKL, already on the model's device and in its VAE dtype
    vae_hash: str | None = None  # A1111's "VAE hash" for the infotext (sha256, 10 hex digits)

    def apply(self, model: LoadedModel) -> Undo:
        before = (model.vae, model.vae_name, model.extra.get("vae_hash"))
        model.vae, model.vae_name = self.vae, self.name
        _set_or_drop(model.extra, "vae_hash", self.vae_hash)

        def undo() -> None:
            model.vae, model.vae_name = before[0], before[1]
            _set_or_drop(model.extra, "vae_hash", before[2])

        return undo


@dataclass(frozen=True)
class WeightDelta:
    """Adds `scale * delta` to named parameters of one component, in place.

    `component`: "unet", "vae" or "text_encoders.<i>"; `deltas`: parameter name (as in
    `named_parameters()`) -> tensor of the parameter's shape. The sum is computed in fp32 and stored in the
    parameter's dtype; the original tensors are kept and copied back by the undo, so restoring is exact
    whatever the dtype (subtracting the delta again would not be).
    """

    component: str
    deltas: Mapping[str, torch.Tensor]
    scale: float = 1.0

    def apply(self, model: LoadedModel) -> Undo:
        params = dict(component_of(model, self.component).named_parameters())
        unknown = sorted(set(self.deltas) - set(params))
        if unknown:
            raise KeyError(f"{self.component} has no parameter(s) {', '.join(unknown[:3])}")
        saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

        def undo() -> None:
            with torch.no_grad():
                for param, original in reversed(saved):
                    param.copy_(original)

        try:
            with torch.no_grad():
                for name, delta in self.deltas.items():
                    param = params[name]
                    if tuple(delta.shape) != tuple(param.shape):
                        raise ValueError(f"{name}: delta shape {tuple(delta.shape)} != {tuple(param.shape)}")
                    saved.append((param, param.detach().clone()))
                    summed = param.float() + self.scale * delta.to(param.device, torch.float32)
                    param.copy_(summed.to(param.dtype))
        except BaseException:
            undo()  # a half-applied patch must not stay
            raise
        return undo


def component_of(model: LoadedModel, component: str) -> torch.nn.Module:
    """The module a patch names: "unet", "vae" or "text_encoders.<index>"."""
    if component in ("unet", "vae"):
        return getattr(model, component)
    prefix, _, index = component.partition(".")
    if prefix == "text_encoders" and index.isdigit() and int(index) < len(model.text_encoders):
        return model.text_encoders[int(index)]
    raise ValueError(f"unknown model component {component!r}; valid: unet, vae, text_encoders.<i>")


def _set_or_drop(values: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
