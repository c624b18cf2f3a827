"""A1111's `modules.infotext_utils`, for extensions: the same module object as `sdwebui.facade.infotext_utils`."""

import sys

from sdwebui.facade import infotext_utils as _target

sys.modules[__name__] = _target
