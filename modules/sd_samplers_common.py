"""A1111's `modules.sd_samplers_common`, for extensions: the same module object as `sdwebui.facade.sd_samplers_common`."""

import sys

from sdwebui.facade import sd_samplers_common as _target

sys.modules[__name__] = _target
