"""A1111's `modules.sd_vae`, for extensions: the same module object as `sdwebui.facade.sd_vae`."""

import sys

from sdwebui.facade import sd_vae as _target

sys.modules[__name__] = _target
