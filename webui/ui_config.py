"""UI default values persisted in ui-config.json with A1111 keys ("txt2img/Sampling steps/value").

Each component built through `UiConfig.make` takes its value / minimum / maximum / step / visible from the
file when present; keys missing from the file are recorded and written back, as A1111 does, so users can
edit them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sdwebui.config.options import write_json_atomic

log = logging.getLogger(__name__)

CONFIGURABLE_FIELDS = ("value", "minimum", "maximum", "step", "visible")


class UiConfig:
    def __init__(self, path: Path | None):
        self.path = path
        self.saved: dict[str, Any] = self._read(path)
        self.defaults: dict[str, Any] = {}

    @staticmethod
    def _read(path: Path | None) -> dict[str, Any]:
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def make(self, tab: str, component_cls: type, label: str, save_value: bool = True, **kwargs: Any) -> Any:
        """Build `component_cls(label=label, **kwargs)` with overrides from ui-config.json.

        `save_value=False`: the default value is not written to the file (it follows the model, e.g. the
        native size), but a value the user put there still wins.
        """
        for field in CONFIGURABLE_FIELDS:
            if field not in kwargs and field != "visible":
                continue
            key = f"{tab}/{label}/{field}"
            default = kwargs.get(field, True if field == "visible" else None)
            if save_value or field != "value":
                self.defaults[key] = default
            if key in self.saved and _compatible(self.saved[key], default, kwargs.get("choices")):
                kwargs[field] = self.saved[key]
        return component_cls(label=label, **kwargs)

    def has_value(self, tab: str, label: str) -> bool:
        """True when ui-config.json holds a value for this control."""
        return f"{tab}/{label}/value" in self.saved

    def value(self, tab: str, label: str, default: Any) -> Any:
        key = f"{tab}/{label}/value"
        self.defaults[key] = default
        return self.saved.get(key, default)

    def save_missing(self) -> None:
        """Write keys not yet in the file (the user's own edits are kept)."""
        if self.path is None:
            return
        missing = {k: v for k, v in self.defaults.items() if k not in self.saved}
        if not missing:
            return
        self.saved.update(missing)
        try:
            write_json_atomic(self.path, self.saved)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)


def _compatible(saved: Any, default: Any, choices: Any) -> bool:
    """A stale value of another type (or a dropdown value no longer offered) is ignored."""
    if default is None:
        return True
    if isinstance(default, bool) != isinstance(saved, bool):
        return False
    if isinstance(default, (int, float)) and not isinstance(saved, (int, float)):
        return False
    if isinstance(default, str) and not isinstance(saved, str):
        return False
    if choices is not None and isinstance(saved, str):
        return saved in [c[1] if isinstance(c, tuple) else c for c in choices]
    return True
