"""A1111's `modules.script_callbacks`, for extensions: the same module object as `sdwebui.facade.script_callbacks`."""

import sys

from sdwebui.facade import script_callbacks as _target

sys.modules[__name__] = _target
