"""A1111's `modules.cache`, for extensions: the same module object as `sdwebui.facade.cache`."""

import sys

from sdwebui.facade import cache as _target

sys.modules[__name__] = _target
