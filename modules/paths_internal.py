"""A1111's `modules.paths_internal`, for extensions: the same module object as `sdwebui.facade.paths_internal`."""

import sys

from sdwebui.facade import paths_internal as _target

sys.modules[__name__] = _target
