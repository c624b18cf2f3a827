"""A1111's `modules.hashes`, for extensions: the same module object as `sdwebui.facade.hashes`."""

import sys

from sdwebui.facade import hashes as _target

sys.modules[__name__] = _target
