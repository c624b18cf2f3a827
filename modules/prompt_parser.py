"""A1111's `modules.prompt_parser`, for extensions: the same module object as `sdwebui.engine.prompt_parser`."""

import sys

from sdwebui.engine import prompt_parser as _target

sys.modules[__name__] = _target
