"""A1111's `modules.ui`: the symbols, `gr_show`, `create_refresh_button` and friends extensions import.

The app's own UI is built elsewhere (webui/); these are A1111's public helpers, working on stock Gradio.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import gradio as gr

from sdwebui.facade.ui_common import (  # noqa: F401 (A1111 re-exports them here)
    OutputPanel,
    create_output_panel,
    create_refresh_button,
    folder_symbol,
    plaintext_to_html,
    refresh_symbol,
)
from sdwebui.facade.ui_components import DropdownMulti, FormRow, ToolButton  # noqa: F401

random_symbol = "\U0001f3b2\ufe0f"  # 🎲️
reuse_symbol = "\u267b\ufe0f"  # ♻️
paste_symbol = "\u2199\ufe0f"  # ↙
apply_style_symbol = "\U0001f4cb"  # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001f3b4"  # 🎴
switch_values_symbol = "\U000021c5"  # ⇅
restore_progress_symbol = "\U0001f300"  # 🌀
detect_image_size_symbol = "\U0001f4d0"  # 📐
save_style_symbol = "\U0001f4be"  # 💾
up_down_symbol = "\u2195\ufe0f"  # ↕️


def gr_show(visible: bool = True) -> dict[str, Any]:
    return gr.update(visible=visible)


def versions_html() -> str:
    """Python, torch, Gradio and app versions, as A1111's footer line."""
    import torch

    python = ".".join(str(x) for x in sys.version_info[:3])
    return (
        f"version: {_git_tag()} &#x2000;•&#x2000; python: {python} ({platform.python_implementation()})"
        f" &#x2000;•&#x2000; torch: {torch.__version__} &#x2000;•&#x2000; gradio: {gr.__version__}"
        f" &#x2000;•&#x2000; checkpoint: {_checkpoint_hash()}"
    )


def _git_tag() -> str:
    import subprocess

    from sdwebui.config.paths import REPO_DIR

    for args in (["describe", "--tags"], ["rev-parse", "--short", "HEAD"]):
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            break
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return "<none>"


def _checkpoint_hash() -> str:
    from sdwebui.facade import shared

    model = shared.current_model()
    return (getattr(model, "sd_model_hash", None) or "N/A") if model is not None else "N/A"
