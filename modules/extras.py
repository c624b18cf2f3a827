"""A1111's `modules.extras`, for extensions: the same module object as `sdwebui.facade.extras`."""

import sys

from sdwebui.facade import extras as _target

sys.modules[__name__] = _target
