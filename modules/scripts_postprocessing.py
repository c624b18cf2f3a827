"""A1111's `modules.scripts_postprocessing`, for extensions: the same module object as `sdwebui.facade.scripts_postprocessing`."""

import sys

from sdwebui.facade import scripts_postprocessing as _target

sys.modules[__name__] = _target
