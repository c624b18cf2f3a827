"""A1111's OptionInfo: one setting's default, label, UI component and checks (here so the per-area option
modules, sdwebui.config.options_<area>, and sdwebui.config.options can both import it without a cycle)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OptionInfo:
    """A1111-compatible option description: default value, label, UI component and section."""

    default: Any = None
    label: str = ""
    component: Any = None
    component_args: Any = None
    onchange: Callable[[], None] | None = None
    section: tuple[str, str] | None = None
    refresh: Callable[[], None] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    restrict_api: bool = False
    category_id: str | None = None
    do_not_save: bool = False
    # allowed values of a dropdown-like option; a callable is asked each time (e.g. the sampler registry)
    choices: list[Any] | Callable[[], list[Any]] | None = field(default=None, repr=False)
    # further check of a value: returns why it is refused, or None (e.g. unknown file-name tags)
    validator: Callable[[Any], str | None] | None = field(default=None, repr=False)

    def allowed_choices(self) -> list[Any] | None:
        return self.choices() if callable(self.choices) else self.choices

    def value_range(self) -> tuple[float | None, float | None]:
        """(minimum, maximum) from the slider arguments, as A1111 options declare their range."""
        args = self.component_args
        if not isinstance(args, dict):
            return None, None
        return args.get("minimum"), args.get("maximum")

    def info(self, info: str) -> OptionInfo:
        self.label += f" ({info})"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[{label}]({url})"
        return self

    def needs_restart(self) -> OptionInfo:
        self.comment_after += " (requires restart)"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.comment_after += " (requires Reload UI)"
        return self
