"""A1111's `modules.modelloader`, for extensions: the same module object as `sdwebui.facade.modelloader`."""

import sys

from sdwebui.facade import modelloader as _target

sys.modules[__name__] = _target
