"""A1111's `modules.extra_networks`, for extensions: the same module object as `sdwebui.facade.extra_networks`."""

import sys

from sdwebui.facade import extra_networks as _target

sys.modules[__name__] = _target
