"""The app objects the facade modules read, through the one binding `shared.bind(services=...)` made.

Before `bind` (extension modules imported by tests, or an app without models) each returns None and the
facade modules show empty lists.
"""

from __future__ import annotations

from typing import Any

from sdwebui.facade import shared


def services() -> Any:
    return shared._services


def models() -> Any:
    """The app's ModelProvider (sdwebui.services.ManagedModels in production), or None."""
    return getattr(services(), "models", None)


def extension_manager() -> Any:
    """The app's ExtensionManager (sdwebui.extensions.manager), or None before extensions are attached."""
    return getattr(getattr(services(), "extensions", None), "manager", None)
