"""A1111's `modules.masking`, for extensions: the same module object as `sdwebui.facade.masking`."""

import sys

from sdwebui.facade import masking as _target

sys.modules[__name__] = _target
