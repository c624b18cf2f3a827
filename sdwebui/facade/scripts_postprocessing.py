"""A1111's `modules.scripts_postprocessing` for extensions: the classes of Extras-tab scripts.

Subclasses of `ScriptPostprocessing` in an extension's scripts/ are collected by the script loader
(`scripts.postprocessing_scripts_data`). Our Extras tab does not run them yet: the classes exist so that
extensions defining them import and load.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any


@dataclasses.dataclass
class PostprocessedImageSharedInfo:
    target_width: int | None = None
    target_height: int | None = None


class PostprocessedImage:
    """One image going through the postprocessing scripts: `info` collects infotext entries, `nametags`
    the parts of the saved file name, `extra_images` the extra outputs."""

    def __init__(self, image: Any):
        self.image = image
        self.info: dict[str, Any] = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list[Any] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes: dict[str, int] | None = None) -> str:
        """ "-tag1-tag2" for the file name, numbered ("-tag-1") when `used_suffixes` already has it."""
        used = used_suffixes if used_suffixes is not None else {}
        suffix = "-".join(self.nametags)
        if suffix:
            suffix = "-" + re.sub(r"[^\w-]", "_", suffix)
        if suffix in used:
            used[suffix] += 1
            suffix += f"-{used[suffix]}"
        else:
            used[suffix] = 1
        return suffix

    def create_copy(
        self, new_image: Any, *, nametags: list[str] | None = None, disable_processing: bool = False
    ):
        """A copy carrying `new_image`, with this one's info and extra name tags."""
        copy = PostprocessedImage(new_image)
        copy.info, copy.shared, copy.caption = dict(self.info), self.shared, self.caption
        copy.nametags = [*self.nametags, *(nametags or [])]
        copy.disable_processing = disable_processing
        return copy


class ScriptPostprocessing:
    """An Extras-tab script: `ui()` returns {parameter name: component}; `process(pp, **values)` changes
    `pp.image` / `pp.info`; `order` sorts the scripts."""

    filename: str | None = None
    controls: dict[str, Any] | None = None
    args_from: int | None = None
    args_to: int | None = None
    order = 1000
    name: str | None = None
    group: Any = None

    def ui(self) -> dict[str, Any] | None:
        return None

    def process(self, pp: PostprocessedImage, **args: Any) -> None:
        return None

    def process_firstpass(self, pp: PostprocessedImage, **args: Any) -> None:
        """Before `process` of any script: may set `pp.shared.target_width/height`."""
        return None

    def image_changed(self) -> None:
        return None
