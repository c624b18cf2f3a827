"""A1111's `modules.sd_samplers_kdiffusion`, for extensions: the same module object as `sdwebui.facade.sd_samplers_kdiffusion`."""

import sys

from sdwebui.facade import sd_samplers_kdiffusion as _target

sys.modules[__name__] = _target
