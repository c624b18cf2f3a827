"""A1111's `modules.upscaler`, for extensions: the same module object as `sdwebui.facade.upscaler`."""

import sys

from sdwebui.facade import upscaler as _target

sys.modules[__name__] = _target
