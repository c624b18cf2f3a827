"""A1111's `modules.safe`, for extensions: the same module object as `sdwebui.facade.safe`."""

import sys

from sdwebui.facade import safe as _target

sys.modules[__name__] = _target
