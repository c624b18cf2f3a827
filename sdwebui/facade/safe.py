"""A1111's `modules.safe`: `torch.load` restricted to tensors and plain containers.

`load` is `torch.load(..., weights_only=True)` (A1111's own restricted unpickler predates it);
`unsafe_torch_load` is the unrestricted `torch.load` extensions call for files they trust.
`Extra(handler)`: inside it, `load` also accepts the classes `handler(module, name)` returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch

unsafe_torch_load = torch.load
_extra: contextvars.ContextVar[Callable[[str, str], Any] | None] = contextvars.ContextVar(
    "safe_extra", default=None
)


class _ExtraUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals().get(f"{module}.{name}")
        if allowed is not None:  # what weights_only accepts (tensor rebuilds, OrderedDict, dtypes, ...)
            return allowed
        handler = _extra.get()
        found = handler(module, name) if handler is not None else None
        if found is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")
        return found


class _ExtraPickleModule:
    Unpickler = _ExtraUnpickler
    load = pickle.load
    __name__ = "safe_extra_pickle"


def load(filename: Any, *args: Any, **kwargs: Any) -> Any:
    """Tensors and containers only (weights_only); within `Extra`, also what its handler allows."""
    kwargs.pop("weights_only", None)
    try:
        return unsafe_torch_load(filename, *args, weights_only=True, **kwargs)
    except pickle.UnpicklingError:
        if _extra.get() is None:
            raise
    # the handler decides, for the globals weights_only refused
    return unsafe_torch_load(filename, *args, weights_only=False, pickle_module=_ExtraPickleModule, **kwargs)


def _allowed_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler

    return _weights_only_unpickler._get_allowed_globals()


@contextlib.contextmanager
def Extra(handler: Callable[[str, str], Any]) -> Iterator[None]:  # noqa: N802 (A1111 name)
    token = _extra.set(handler)
    try:
        yield
    finally:
        _extra.reset(token)
