"""Gradio web UI: one module per tab; `create_ui(services)` builds the page, `mount_ui` serves it."""

from webui.layout import create_ui, mount_ui, ui_assets

__all__ = ["create_ui", "mount_ui", "ui_assets"]
