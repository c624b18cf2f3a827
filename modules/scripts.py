"""A1111's `modules.scripts`, for extensions: the same module object as `sdwebui.facade.scripts`."""

import sys

from sdwebui.facade import scripts as _target

sys.modules[__name__] = _target
