"""A1111's `modules.styles`, for extensions: the same module object as `sdwebui.config.styles`."""

import sys

from sdwebui.config import styles as _target

sys.modules[__name__] = _target
