"""PNG files for the gallery, written completely before Gradio sees their path.

Handing Gradio PIL images makes it write `<cache>/<hash of the bytes>/image.png` in place
(`Path.write_bytes`, truncate then write). The same picture shown twice (an unchanged live preview, a
result sent again) rewrites a file the browser may be downloading: Starlette has already sent the old
Content-Length, the file is shorter for a moment, and h11 fails with "Too little data for declared
Content-Length" (ERR_CONTENT_LENGTH_MISMATCH in the browser). Here each image gets its own name, is
written under a temporary name and renamed into place, so a path handed to Gradio always names a
finished file (Gradio copies file paths into its cache with the same write-then-rename).
"""

from __future__ import annotations

import collections
import itertools
import os
import tempfile
import threading
from pathlib import Path

from PIL import Image

from sdwebui.outputs.infotext import png_info_with

KEEP_FILES = 400  # older files are removed: Gradio has copied them into its cache by then


class GalleryFiles:
    def __init__(self, folder: Path | None = None, keep: int = KEEP_FILES):
        self._folder = folder
        self._keep = keep
        self._written: collections.deque[Path] = collections.deque()
        self._count = itertools.count()
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="sdwebui-gallery-"))
            self._folder.mkdir(parents=True, exist_ok=True)
            return self._folder

    def write(self, image: Image.Image, infotext: str = "", stem: str = "image") -> str:
        """Save `image` (with its generation parameters) atomically; returns the final path."""
        folder = self.folder
        final = folder / f"{next(self._count):06d}-{stem}.png"
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{final.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                image.save(handle, format="PNG", pnginfo=png_info_with(infotext) if infotext else None)
            os.replace(staging, final)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        self._forget_old(final)
        return str(final)

    def _forget_old(self, path: Path) -> None:
        with self._lock:
            self._written.append(path)
            while len(self._written) > self._keep:
                self._written.popleft().unlink(missing_ok=True)
