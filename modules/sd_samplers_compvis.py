"""A1111's `modules.sd_samplers_compvis`, for extensions: the same module object as `sdwebui.facade.sd_samplers_compvis`."""

import sys

from sdwebui.facade import sd_samplers_compvis as _target

sys.modules[__name__] = _target
