"""A1111's `modules.timer`, for extensions: the same module object as `sdwebui.facade.timer`."""

import sys

from sdwebui.facade import timer as _target

sys.modules[__name__] = _target
