"""A1111's `modules.shared_state`: the `State` class of `shared.state` (the same class object)."""

from sdwebui.facade.shared import State

__all__ = ["State"]
