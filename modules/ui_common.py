"""A1111's `modules.ui_common`, for extensions: the same module object as `sdwebui.facade.ui_common`."""

import sys

from sdwebui.facade import ui_common as _target

sys.modules[__name__] = _target
