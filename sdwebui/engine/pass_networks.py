"""The job's LoRA networks on the other checkpoints its passes run on (the SDXL refiner, hires fix's
hr_checkpoint_name): A1111 applies the prompt's networks to whatever model is loaded, so these get them too.

``PassNetworksPatch`` is a lease patch of such a checkpoint (sdwebui.engine.pass_models leases it for the
batch's sampling): it applies the networks active on the job's view for the batch (``ActiveNetworks.weights``:
the same files at the same multipliers, a script's pinned ones included) to that checkpoint's own modules,
and the lease's undo restores them bit-exactly when the batch's sampling ends. Each network is read for that
checkpoint (bound to its module names) and applied where it fits: a module it names that the checkpoint
lacks, or has in another shape (an SDXL base LoRA on the refiner, whose U-Net and text encoder have other
widths), is left out, as A1111 skips it (and logs it).

A network that fits nothing in the checkpoint does not fail the job (users routinely keep a base LoRA on
with a refiner), and it is not silent either: ``on_skipped(file name, checkpoint)`` is called, and the engine
writes it in the job's infotext as ``Lora skipped: "style.safetensors: refiner [hash]"`` (``SKIPPED_KEY``).
On the job's own model the rule stays strict: a file that matches nothing there is a 4xx naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdwebui.engine.extra_networks import ActiveNetworks
from sdwebui.engine.requests import RequestError
from sdwebui.models.lora import (
    LoraError,
    LoraNetwork,
    LoraPatch,
    NetworkModule,
    NetworkWeight,
    base_delta,
    resolve_module,
)
from sdwebui.models.model import LoadedModel
from sdwebui.models.patches import Undo

log = logging.getLogger(__name__)

SKIPPED_KEY = "Lora skipped"  # infotext key: the networks that fit nothing in a pass's checkpoint


def _unchanged() -> None:
    return None


@dataclass(frozen=True, eq=False)
class PassNetworksPatch:
    """The lease patch giving a pass's checkpoint the job's active networks (see the module docstring)."""

    job: ActiveNetworks  # on the job's view: what the batch activated
    on_skipped: Callable[[str, LoadedModel], None]  # (file name, checkpoint) of a network that fits nothing

    def apply(self, model: LoadedModel) -> Undo:
        if model.unet is self.job.model.unet:  # the job's own checkpoint: its weights carry them already
            return _unchanged
        fitted = [self._fitted(name, weight, model) for name, weight in self.job.weights]
        weights = [weight for weight in fitted if weight is not None]
        if not weights:
            return _unchanged
        try:
            return LoraPatch(weights, self.job.patch.cache).apply(model)
        except LoraError as error:  # a fitting module the maths still refuses: name the checkpoint too
            raise RequestError("prompt", f"{error} (on {model.info.name})") from None

    def _fitted(self, name: str, weight: NetworkWeight, model: LoadedModel) -> NetworkWeight | None:
        """`weight`'s network read for `model`, with only the modules that fit it; None when none does."""
        if weight.te == 0 and weight.unet == 0:
            return None
        try:
            network: LoraNetwork | None = self.job.patch.resolve(name, model)
        except LoraError:  # no key names a module of this checkpoint (or it is another family)
            network = None
        except OSError as error:
            raise RequestError("prompt", f"LoRA {name!r}: {error}") from None
        modules = {}
        for target, module in (network.modules if network is not None else {}).items():
            if weight.multiplier(target) != 0 and module_fits(model, module):
                modules[target] = module
        if network is None or not modules:
            self.on_skipped(weight.network.path.name, model)
            return None
        if len(modules) < len(network.modules):
            log.info(
                "LoRA %s: %d of its %d modules fit %s; the others are left out",
                network.path.name,
                len(modules),
                len(network.modules),
                model.info.name,
            )
            network = dataclasses.replace(network, modules=modules)
        return NetworkWeight(network, weight.te, weight.unet)


def module_fits(model: LoadedModel, module: NetworkModule) -> bool:
    """Whether `module`'s difference fits the model's module it targets (exists, same shapes). The shapes
    are worked out on the meta device (no arithmetic); a step it cannot take (a norm read as a number) is
    computed for real."""
    try:
        target = resolve_module(model, module.target)
    except LoraError:
        return False
    if module.bias_diff is not None:
        bias = getattr(target, "bias", None)
        if not isinstance(bias, torch.Tensor) or bias.numel() != module.bias_diff.numel():
            return False
    if module.weights is None:
        return True
    weight = getattr(target, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    with torch.no_grad():
        try:
            base_delta(torch.empty_like(weight, device="meta"), module)
        except LoraError:
            return False
        except (RuntimeError, NotImplementedError):
            try:
                base_delta(weight, module)
            except (LoraError, RuntimeError):
                return False
    return True
