"""A1111's `modules.call_queue`, for extensions: the same module object as `sdwebui.facade.call_queue`."""

import sys

from sdwebui.facade import call_queue as _target

sys.modules[__name__] = _target
