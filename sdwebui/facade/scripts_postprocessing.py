"""A1111's `modules.scripts_postprocessing` for extensions: the classes of Extras-tab scripts.

Subclasses of `ScriptPostprocessing` in an extension's scripts/ are collected by the script loader
(`scripts.postprocessing_scripts_data`) into `scripts.scripts_postproc`, a `ScriptPostprocessingRunner`: the
Extras tab shows each script's `ui()` controls, and Extras (tab and API) runs them as steps after the
built-in upscaling and face restoration, in `order`, as A1111 does: every script's `process_firstpass`,
then each `process(pp, **values)` on the image and the extra images earlier scripts added.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("webui.extensions")


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


class PostprocessingArgsError(ValueError):
    """Bad script arguments of an Extras request; `field` names the request field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ScriptPostprocessingRunner:
    """The Extras scripts of the loaded extensions (A1111's `scripts.scripts_postproc`)."""

    def __init__(self, classes: Sequence[Any] = ()):
        self.scripts: list[ScriptPostprocessing] = []
        self.ui_created = False
        for data in classes:
            try:
                script = data.script_class()
            except Exception:
                log.exception("extension %s: error creating Extras script %s", data.extension, data.path)
                continue
            script.filename = data.path
            self.scripts.append(script)

    def scripts_in_preferred_order(self) -> list[ScriptPostprocessing]:
        return sorted(self.scripts, key=lambda s: (s.order, s.name or ""))

    def setup_ui(self) -> list[Any]:
        """Each script's `ui()` controls, in order, in the Blocks being built; the flat list of components."""
        inputs: list[Any] = []
        for script in self.scripts_in_preferred_order():
            script.args_from = len(inputs)
            script.controls = dict(script.ui() or {})
            inputs.extend(script.controls.values())
            script.args_to = len(inputs)
        self.ui_created = True
        return inputs

    def _ensure_ui(self) -> None:
        if not self.ui_created:  # an API call before the tab exists (or without the UI): build them aside
            import gradio as gr

            with gr.Blocks(analytics_enabled=False):
                self.setup_ui()

    def create_args_for_run(self, scripts_args: dict[str, dict[str, Any]]) -> list[Any]:
        """The flat argument list for `run` from {script name: {control name: value}}; scripts and controls
        not named get their component's default. Unknown names are errors naming the field."""
        self._ensure_ui()
        by_name = {script.name: script for script in self.scripts}
        for name, values in scripts_args.items():
            script = by_name.get(name)
            if script is None:
                known = sorted(str(s.name) for s in self.scripts)
                raise PostprocessingArgsError(
                    "scripts", f"unknown Extras script {name!r}; installed: {known}"
                )
            if not isinstance(values, dict):
                raise PostprocessingArgsError(f"scripts.{name}", "expected an object of control name: value")
            unknown = set(values) - set(script.controls or {})
            if unknown:
                raise PostprocessingArgsError(
                    f"scripts.{name}",
                    f"unknown argument(s) {sorted(unknown)}; expected {list(script.controls or {})}",
                )
        args: list[Any] = []
        for script in self.scripts_in_preferred_order():
            given = scripts_args.get(str(script.name), {})
            for control_name, component in (script.controls or {}).items():
                args.append(given.get(control_name, getattr(component, "value", None)))
        return args

    def run(self, pp: PostprocessedImage, args: Sequence[Any]) -> None:
        """A1111's order: every script's process_firstpass, then process on each image (and extra images)."""
        self._ensure_ui()
        calls = []
        for script in self.scripts_in_preferred_order():
            values = args[script.args_from : script.args_to]
            calls.append((script, dict(zip((script.controls or {}).keys(), values, strict=False))))
        for script, values in calls:
            script.process_firstpass(pp, **values)
        all_images = [pp]
        for script, values in calls:
            for single in all_images.copy():
                if not single.disable_processing:
                    script.process(single, **values)
                for extra in single.extra_images:
                    all_images.append(
                        extra if isinstance(extra, PostprocessedImage) else single.create_copy(extra)
                    )
                single.extra_images.clear()
        pp.extra_images = all_images[1:]
