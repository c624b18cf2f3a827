"""A1111's `modules.generation_parameters_copypaste`, for extensions: the same module object as `sdwebui.facade.generation_parameters_copypaste`."""

import sys

from sdwebui.facade import generation_parameters_copypaste as _target

sys.modules[__name__] = _target
