"""A1111's `modules.shared`, for extensions: the same module object as `sdwebui.facade.shared`."""

import sys

from sdwebui.facade import shared as _target

sys.modules[__name__] = _target
