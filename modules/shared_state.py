"""A1111's `modules.shared_state`, for extensions: the same module object as `sdwebui.facade.shared_state`."""

import sys

from sdwebui.facade import shared_state as _target

sys.modules[__name__] = _target
