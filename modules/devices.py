"""A1111's `modules.devices`, for extensions: the same module object as `sdwebui.facade.devices`."""

import sys

from sdwebui.facade import devices as _target

sys.modules[__name__] = _target
