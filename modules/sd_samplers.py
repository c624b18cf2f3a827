"""A1111's `modules.sd_samplers`, for extensions: the same module object as `sdwebui.facade.sd_samplers`."""

import sys

from sdwebui.facade import sd_samplers as _target

sys.modules[__name__] = _target
