"""A1111's `modules.extensions`, for extensions: the same module object as `sdwebui.extensions.manager`."""

import sys

from sdwebui.extensions import manager as _target

sys.modules[__name__] = _target
