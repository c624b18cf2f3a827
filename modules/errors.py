"""A1111's `modules.errors`, for extensions: the same module object as `sdwebui.facade.errors`."""

import sys

from sdwebui.facade import errors as _target

sys.modules[__name__] = _target
