"""A1111's `modules.images`, for extensions: the same module object as `sdwebui.facade.images`."""

import sys

from sdwebui.facade import images as _target

sys.modules[__name__] = _target
