"""A1111's old name for `modules.infotext_utils` (renamed in A1111 1.8); extensions still import it."""

from sdwebui.facade.infotext_utils import *  # noqa: F403
from sdwebui.facade.infotext_utils import __all__  # noqa: F401
