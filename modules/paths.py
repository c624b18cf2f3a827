"""A1111's `modules.paths`, for extensions: the same module object as `sdwebui.config.paths`."""

import sys

from sdwebui.config import paths as _target

sys.modules[__name__] = _target
