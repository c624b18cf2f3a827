"""The undo of a patch: weights written back bit-exactly, from a copy or by subtraction plus a sparse correction.

A weight-free difference (plain LoRA, LoHa, LoKr, diff) is added in fp32 and stored in the weight's dtype
as ``W + c * d``. Where the weight lives in RAM the original is copied (``Copied``): the patch is one add,
a switch of multiplier one pass from the copy (the same bits as a fresh apply), the undo one copy back.
On an accelerator a copy would cross the bus, so the weight is undone by subtraction (``Subtracted``):
subtracting the difference again is exact except for a few elements where rounding crossed a binade, whose
originals are kept; a switch of multiplier is one more step (``W + (new - old) * d``) with its own
corrections, undone in reverse order, and a fingerprint of the original bits proves the result. Those
passes write into reused buffers: fresh large tensors cost page faults.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sdwebui.models.lora.cache import DeltaCache
from sdwebui.models.lora.errors import LoraError

Delta = Callable[[], torch.Tensor]  # a deterministic fp32 difference of the weight's shape
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns as integers (NaN and -0.0 compare exactly)."""
    return tensor.view(_BITS[tensor.element_size()])


def fingerprint(tensor: torch.Tensor) -> int:
    """A checksum of the bits: the sum of them read as int64 words (wrapping, so any order gives the same)."""
    flat = tensor.detach().reshape(-1)
    try:
        return int(flat.view(torch.int64).sum().item())  # int64 sums are vectorised; int32 -> int64 is not
    except RuntimeError:  # a size or offset not a multiple of 8 bytes
        return int(_bits(flat).sum().item())


def _differing(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flat positions where the bits differ (numpy compares and finds them several times faster on the CPU)."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(_bits(a).reshape(-1).numpy() != _bits(b).reshape(-1).numpy()))
    return (_bits(a) != _bits(b)).reshape(-1).nonzero().squeeze(1)


class Scratch:
    """Reused buffers for one pass over a model, two per dtype and device."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def like(self, tensor: torch.Tensor, slot: int) -> torch.Tensor:
        key = (slot, tensor.dtype, tensor.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < tensor.numel():
            buffer = self._buffers[key] = torch.empty(
                tensor.numel(), dtype=tensor.dtype, device=tensor.device
            )
        return buffer[: tensor.numel()].view(tensor.shape)


def _step_delta(parts: Sequence[tuple[Delta, float]]) -> tuple[torch.Tensor, float]:
    """(difference, coefficient) of ``sum c_i * d_i``: one difference is scaled inside the add itself."""
    if len(parts) == 1:
        return parts[0][0](), parts[0][1]
    total: torch.Tensor | None = None
    for delta, coefficient in parts:  # always the same order: the undo relies on getting the same bits
        total = delta() * coefficient if total is None else total.add_(delta(), alpha=coefficient)
    assert total is not None
    return total, 1.0


@dataclass
class _Step:
    parts: tuple[tuple[Delta, float], ...]
    index: torch.Tensor  # flat positions where subtracting the step again is inexact
    values: torch.Tensor  # the weight there before the step


def _take_step(tensor: torch.Tensor, parts: tuple[tuple[Delta, float], ...], scratch: Scratch) -> _Step:
    """``tensor += sum c_i * d_i`` in fp32, stored in its dtype; what undoing it needs besides subtracting."""
    delta, alpha = _step_delta(parts)
    patched = torch.add(tensor, delta, alpha=alpha, out=scratch.like(tensor, 0))
    back = torch.sub(patched, delta, alpha=alpha, out=scratch.like(tensor, 1))
    wrong = _differing(back, tensor)
    if tensor.numel() < 2**31:
        wrong = wrong.to(torch.int32)  # half the RAM per correction
    values = tensor.view(-1)[wrong.to(tensor.device)].to("cpu")
    tensor.copy_(patched)
    return _Step(parts, wrong.to("cpu"), values)


def _undo_step(tensor: torch.Tensor, step: _Step, scratch: Scratch) -> None:
    delta, alpha = _step_delta(step.parts)
    tensor.copy_(torch.sub(tensor, delta, alpha=alpha, out=scratch.like(tensor, 1)))  # as _take_step did
    tensor.view(-1)[step.index.to(tensor.device)] = step.values.to(tensor.device)


@dataclass
class Subtracted:
    """A weight patched by steps of weight-free differences: ``terms`` are (network id, difference,
    multiplier now) per network, so a new set of multipliers is one more step."""

    tensor: torch.Tensor
    terms: list[tuple[Hashable, Delta, float]]
    fingerprint: int
    steps: list[_Step] = field(default_factory=list)
    original: torch.Tensor | None = None  # a CPU copy instead, where corrections would be larger than it

    @property
    def nbytes(self) -> int:
        copy = self.original.nbytes if self.original is not None else 0
        return copy + sum(step.index.nbytes + step.values.nbytes for step in self.steps)

    def step_to(self, multipliers: Sequence[float], scratch: Scratch) -> None:
        pairs = list(zip(self.terms, multipliers, strict=True))
        if self.original is not None:  # from the copy, as a fresh apply
            self.tensor.copy_(self.original.to(self.tensor.device))
            parts = tuple((delta, new) for (_, delta, _), new in pairs if new != 0)
            if parts:
                delta, alpha = _step_delta(parts)
                self.tensor.copy_(
                    torch.add(self.tensor, delta, alpha=alpha, out=scratch.like(self.tensor, 0))
                )
        else:
            parts = tuple((delta, new - old) for (_, delta, old), new in pairs if new != old)
            if parts:
                self.steps.append(_take_step(self.tensor, parts, scratch))
        self.terms = [(key, delta, new) for (key, delta, _), new in pairs]

    def restore(self, scratch: Scratch) -> None:
        if self.original is not None:
            self.tensor.copy_(self.original.to(self.tensor.device))
            return
        while self.steps:
            _undo_step(self.tensor, self.steps[-1], scratch)
            self.steps.pop()
        if fingerprint(self.tensor) != self.fingerprint:
            raise LoraError(f"a weight of shape {tuple(self.tensor.shape)} was not restored bit-exactly")


@dataclass
class Copied:
    """A weight in RAM patched by weight-free differences, its original kept: ``terms`` as `Subtracted`'s."""

    tensor: torch.Tensor
    terms: list[tuple[Hashable, Delta, float]]
    original: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.original.nbytes

    def step_to(self, multipliers: Sequence[float], scratch: Scratch) -> None:
        pairs = list(zip(self.terms, multipliers, strict=True))
        _write(self.tensor, self.original, tuple((delta, new) for (_, delta, _), new in pairs if new != 0))
        self.terms = [(key, delta, new) for (key, delta, _), new in pairs]

    def restore(self, scratch: Scratch) -> None:
        self.tensor.copy_(self.original)


def _write(tensor: torch.Tensor, original: torch.Tensor, parts: tuple[tuple[Delta, float], ...]) -> None:
    """``tensor = original + sum c_i * d_i`` in one pass (fp32 maths, stored in the tensor's dtype)."""
    if not parts:
        tensor.copy_(original)
        return
    delta, alpha = _step_delta(parts)
    torch.add(original, delta, alpha=alpha, out=tensor)


@dataclass
class Undo:
    """How to write back every tensor a patch changed: a CPU copy where the difference depends on the
    weight (DoRA, IA3, OFT...) or is small (biases), else subtraction plus sparse corrections. Called once."""

    copies: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    weight_free: dict[str, Subtracted | Copied] = field(
        default_factory=dict
    )  # weights patched by weight-free differences, by target
    scratch: Scratch = field(default_factory=Scratch)
    by_subtraction: bool = False  # in RAM too (a copy is the faster undo there; this holds less)
    budget: DeltaCache | None = None  # the RAM the copies may take (beyond it: by subtraction)
    reserved: int = 0  # bytes of copies taken from the budget

    def keep(self, tensor: torch.Tensor) -> None:
        self.copies.append((tensor, tensor.detach().to("cpu", copy=True)))

    def add(self, target: str, tensor: torch.Tensor, terms: list[tuple[Hashable, Delta, float]]) -> None:
        """``tensor += sum m_i * d_i``: from a copy in RAM while the budget has room for it, else undoable
        without a copy of the tensor (or with one where that is smaller than the corrections)."""
        if tensor.device.type == "cpu" and not self.by_subtraction and self._reserve(tensor.nbytes):
            copied = Copied(tensor, list(terms), tensor.detach().clone())
            _write(tensor, copied.original, tuple((delta, m) for _, delta, m in terms))
            self.weight_free[target] = copied
            return
        record = Subtracted(tensor, list(terms), fingerprint(tensor))
        step = _take_step(tensor, tuple((delta, m) for _, delta, m in terms), self.scratch)
        if step.index.numel() * (step.index.element_size() + tensor.element_size()) >= tensor.nbytes:
            record.original = _original(tensor, step, self.scratch)  # a copy is smaller
        else:
            record.steps.append(step)
        self.weight_free[target] = record

    def _reserve(self, size: int) -> bool:
        if self.budget is not None and not self.budget.reserve(size):
            return False
        self.reserved += size
        return True

    @property
    def nbytes(self) -> int:
        """RAM the undo holds (CPU copies and corrections)."""
        return sum(copy.nbytes for _, copy in self.copies) + sum(r.nbytes for r in self.weight_free.values())

    def reweight(self, targets: dict[str, list[tuple[Hashable, float]]]) -> bool:
        """New multipliers for the same networks on the same targets, one step per weight; False (and
        nothing changed) when the patch is not that shape: the caller undoes and applies anew."""
        if self.copies or set(targets) != set(self.weight_free):
            return False
        for target, record in self.weight_free.items():
            if [key for key, _ in targets[target]] != [key for key, _, _ in record.terms]:
                return False
        with torch.no_grad():
            for target, record in self.weight_free.items():
                record.step_to([m for _, m in targets[target]], self.scratch)
        self.scratch = Scratch()  # the buffers are not held between switches
        return True

    def __call__(self) -> None:
        with torch.no_grad():
            failure: LoraError | None = None
            for record in reversed(list(self.weight_free.values())):
                try:
                    record.restore(self.scratch)
                except LoraError as error:  # restore the others still; report it
                    failure = failure or error
            self.weight_free.clear()
            if self.budget is not None:
                self.budget.release(self.reserved)
            self.reserved = 0
            while self.copies:
                tensor, copy = self.copies.pop()
                tensor.copy_(copy.to(tensor.device))
            self.scratch = Scratch()  # the buffers go with the patch
            if failure is not None:
                raise failure


def _original(tensor: torch.Tensor, step: _Step, scratch: Scratch) -> torch.Tensor:
    """The weight before `step` as a CPU copy (for a difference so large the corrections cover most of it)."""
    delta, alpha = _step_delta(step.parts)
    back = torch.sub(tensor, delta, alpha=alpha, out=scratch.like(tensor, 1)).to("cpu", copy=True)
    back.view(-1)[step.index] = step.values
    return back
