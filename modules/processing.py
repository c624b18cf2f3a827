"""A1111's `modules.processing`, for extensions: the same module object as `sdwebui.facade.processing`."""

import sys

from sdwebui.facade import processing as _target

sys.modules[__name__] = _target
