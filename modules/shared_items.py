"""A1111's `modules.shared_items`, for extensions: the same module object as `sdwebui.facade.shared_items`."""

import sys

from sdwebui.facade import shared_items as _target

sys.modules[__name__] = _target
