"""A1111's `modules.sd_samplers_cfg_denoiser`, for extensions: the same module object as `sdwebui.facade.sd_samplers_cfg_denoiser`."""

import sys

from sdwebui.facade import sd_samplers_cfg_denoiser as _target

sys.modules[__name__] = _target
