"""A1111's `launch` module, for extensions (`import launch` in scripts and install.py): the same module
object as `sdwebui.extensions.shims.launch`. Not a launcher: start the app with `app.py` / `webui.sh`."""

import sys

from sdwebui.extensions.shims import launch as _target

sys.modules[__name__] = _target
