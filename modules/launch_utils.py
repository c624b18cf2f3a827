"""A1111's `modules.launch_utils`, for extensions: the same module object as `launch` (is_installed,
run_pip, git_tag, commit_hash, ...: sdwebui.extensions.shims.launch)."""

import sys

from sdwebui.extensions.shims import launch as _target

sys.modules[__name__] = _target
