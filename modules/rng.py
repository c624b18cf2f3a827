"""A1111's `modules.rng`, for extensions: the same module object as `sdwebui.engine.rng`."""

import sys

from sdwebui.engine import rng as _target

sys.modules[__name__] = _target
