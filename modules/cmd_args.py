"""A1111's `modules.cmd_args`, for extensions: the same module object as `sdwebui.config.flags`."""

import sys

from sdwebui.config import flags as _target

sys.modules[__name__] = _target
