"""A1111's `modules.img2img`, for extensions: the same module object as `sdwebui.facade.img2img`."""

import sys

from sdwebui.facade import img2img as _target

sys.modules[__name__] = _target
