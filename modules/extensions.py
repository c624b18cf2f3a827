"""A1111's `modules.extensions`, for extensions: the same module object as `sdwebui.facade.extensions`."""

import sys

from sdwebui.facade import extensions as _target

sys.modules[__name__] = _target
