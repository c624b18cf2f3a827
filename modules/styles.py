"""Prompt styles stored in styles.csv (A1111 columns name,prompt,negative_prompt).

Applying a style: a style prompt containing `{prompt}` wraps the user's prompt, otherwise it is appended
after ", " (A1111 semantics). Styles are applied when a request is built, so infotexts carry the final text.
"""

from __future__ import annotations

import csv
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modules.engine.requests import RequestError

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
        self.reload()

    def reload(self) -> None:
        styles: dict[str, PromptStyle] = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8-sig", newline="") as handle:
                for row in csv.DictReader(handle):
                    name = (row.get("name") or "").strip()
                    if not name:
                        continue
                    # A1111 wrote an older column named "text" for the prompt
                    prompt = row.get("prompt") if row.get("prompt") is not None else row.get("text", "")
                    styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
        with self._lock:
            self._styles = styles

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

    def apply_to_prompt(self, prompt: str, names: Iterable[str]) -> str:
        for style in self._lookup(names):
            prompt = merge_prompts(style.prompt, prompt)
        return prompt

    def apply_to_negative_prompt(self, prompt: str, names: Iterable[str]) -> str:
        for style in self._lookup(names):
            prompt = merge_prompts(style.negative_prompt, prompt)
        return prompt
