"""A1111's `modules.ui`, for extensions: the same module object as `sdwebui.facade.ui`."""

import sys

from sdwebui.facade import ui as _target

sys.modules[__name__] = _target
