"""A1111's `modules.sd_models`, for extensions: the same module object as `sdwebui.facade.sd_models`."""

import sys

from sdwebui.facade import sd_models as _target

sys.modules[__name__] = _target
