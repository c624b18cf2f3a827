"""Prompt styles stored in styles.csv (A1111 columns name,prompt,negative_prompt).

Applying a style: a style prompt containing `{prompt}` wraps the user's prompt, otherwise it is appended
after ", " (A1111 semantics). Styles are applied when a request is built, so infotexts carry the final text.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sdwebui.config.options import keep_aside
from sdwebui.engine.requests import RequestError

log = logging.getLogger(__name__)
FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_prompt: str, prompt: str) -> str:
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


class StyleDatabase:
    """Styles in file order; thread-safe reads and atomic saves."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._styles: dict[str, PromptStyle] = {}
        self.load_warnings = self.reload()

    def reload(self) -> list[str]:
        """Read styles.csv. A file that is not a readable CSV (binary, UTF-16, a directory, no `name`
        column) is moved aside as `styles.csv.bad-<time>` and no styles are loaded; returns the warnings."""
        styles: dict[str, PromptStyle] = {}
        warnings: list[str] = []
        if self.path is not None and (self.path.exists() or self.path.is_symlink()):
            try:
                styles = _read_styles(self.path)
            except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
                warnings.append(
                    f"{self.path} is not a readable styles file ({_reason(exc)}); starting without styles "
                    f"({keep_aside(self.path)})"
                )
                log.warning("%s", warnings[-1])
        with self._lock:
            self._styles = styles
        return warnings

    def all(self) -> list[PromptStyle]:
        with self._lock:
            return list(self._styles.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._styles)

    def get(self, name: str) -> PromptStyle | None:
        with self._lock:
            return self._styles.get(name)

    def save_style(self, style: PromptStyle) -> None:
        if not style.name.strip():
            raise RequestError("name", "a style needs a name")
        with self._lock:
            self._styles[style.name] = style
        self.save()

    def delete(self, name: str) -> bool:
        with self._lock:
            removed = self._styles.pop(name, None) is not None
        if removed:
            self.save()
        return removed

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="styles", suffix=".csv.tmp", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for style in self.all():
                writer.writerow(
                    {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
                )
        os.replace(tmp, self.path)

    def _lookup(self, names: Iterable[str]) -> list[PromptStyle]:
        found = []
        for name in names:
            style = self.get(name)
            if style is None:
                raise RequestError("styles", f"unknown style {name!r}; known: {self.names()}")
            found.append(style)
        return found

    def check(self, names: Iterable[str]) -> None:
        """Raise RequestError("styles") for a name that is not a style."""
        self._lookup(names)

    def apply_to_prompt(self, prompt: str, names: Iterable[str]) -> str:
        for style in self._lookup(names):
            prompt = merge_prompts(style.prompt, prompt)
        return prompt

    def apply_to_negative_prompt(self, prompt: str, names: Iterable[str]) -> str:
        for style in self._lookup(names):
            prompt = merge_prompts(style.negative_prompt, prompt)
        return prompt


def _read_styles(path: Path) -> dict[str, PromptStyle]:
    styles: dict[str, PromptStyle] = {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is not None and "name" not in reader.fieldnames:
            raise ValueError(f"no 'name' column in its header {reader.fieldnames}")
        for row in reader:
            name = (row.get("name") or "").strip()
            if not name:
                continue
            # A1111 wrote an older column named "text" for the prompt
            prompt = row.get("prompt") if row.get("prompt") is not None else row.get("text", "")
            styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    return styles


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a file"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
