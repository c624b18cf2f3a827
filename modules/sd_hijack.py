"""A1111's `modules.sd_hijack`, for extensions: the same module object as `sdwebui.facade.sd_hijack`."""

import sys

from sdwebui.facade import sd_hijack as _target

sys.modules[__name__] = _target
