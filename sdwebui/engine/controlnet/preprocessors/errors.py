"""Bad preprocessor input: 4xx errors naming the module field (RequestError subclasses)."""

from __future__ import annotations

from collections.abc import Sequence

from sdwebui.engine.errors import RequestError


class UnknownModuleError(RequestError):
    """The module (preprocessor) name is not one we know; lists those that can run."""

    def __init__(self, name: str, valid: Sequence[str], field_name: str = "module"):
        super().__init__(field_name, f"unknown ControlNet module {name!r}; valid: {', '.join(valid)}")
        self.module = name


class MissingAnnotatorError(RequestError):
    """A model-based module whose weight file is not in models/ControlNetAnnotators/ (or models/clip_vision/)."""

    def __init__(
        self, name: str, filename: str, field_name: str = "module", folder: str = "ControlNetAnnotators"
    ):
        what = "the CLIP vision encoder" if folder == "clip_vision" else "the annotator weights"
        super().__init__(
            field_name,
            f"ControlNet module {name!r} needs {what} {filename!r}: put the file at models/{folder}/{filename}",
        )
        self.module = name
        self.filename = filename


class BrokenAnnotatorError(RequestError):
    """An annotator weight file that is there but is not that annotator's network (or does not unpickle)."""

    def __init__(self, path: str, reason: str, field_name: str = "module"):
        super().__init__(field_name, f"the annotator weights {path} do not load: {reason}")
        self.path = path


class PreprocessorInputError(RequestError):
    """The image (or mask) given to a module does not fit it (e.g. inpaint_only without a mask)."""
