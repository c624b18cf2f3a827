"""A1111's `modules.ui_components`, for extensions: the same module object as `sdwebui.facade.ui_components`."""

import sys

from sdwebui.facade import ui_components as _target

sys.modules[__name__] = _target
