"""Saving generated images A1111-style: `outputs/<kind>-images/YYYY-MM-DD/NNNNN-SEED.png` with infotext.

Files are written to a temporary name in the target folder, then hard-linked to their final numbered
name, which fails instead of overwriting when the name exists. A per-number lock file (`.NNNNN.lock`,
created with O_EXCL) keeps concurrent writers, threads or processes, from taking the same number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import time
from pathlib import Path

from PIL import Image

from sdwebui.outputs.filename_pattern import FilenameFields
from sdwebui.outputs.filename_pattern import expand as expand_pattern
from sdwebui.outputs.infotext import exif_with, png_info_with

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
JPEG_QUALITY = 80  # A1111's jpeg_quality default (also used for lossy WebP)
STALE_LOCK_SECONDS = 60.0
_MAX_ATTEMPTS = 10_000
_RE_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_KINDS = {"txt2img": "txt2img-images", "img2img": "img2img-images", "extras": "extras-images"}


def dated_output_dir(root: Path, kind: str, date: dt.date | None = None) -> Path:
    """`root/<kind>-images/YYYY-MM-DD` (created). `kind` is "txt2img", "img2img", "extras" or a folder name
    such as "txt2img-grids"."""
    folder = _KINDS.get(kind, kind)
    if not folder or folder in (".", "..") or _RE_UNSAFE.search(folder):
        raise ValueError(f"output kind must be a plain folder name, got {kind!r}")
    path = Path(root) / folder / (date or dt.date.today()).strftime("%Y-%m-%d")
    path.mkdir(parents=True, exist_ok=True)
    return path


def next_sequence_number(directory: Path) -> int:
    """One more than the highest `NNNNN` file-name prefix in `directory` (A1111's get_next_sequence_number)."""
    highest = -1
    for name in os.listdir(directory):
        head = os.path.splitext(name)[0].split("-")[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1


def filename_decoration(filename_pattern: str, seed: int, date: dt.date | None = None) -> str:
    """The name part a pattern gives for an image known only by its seed (see sdwebui.outputs.filename_pattern)."""
    now = dt.datetime.combine(date, dt.datetime.now().time()) if date else None
    return expand_pattern(filename_pattern, FilenameFields(seed=seed), now)


def _number_taken(directory: Path, number: int) -> bool:
    prefix = f"{number:05}"
    return any(os.path.splitext(name)[0].split("-")[0] == prefix for name in os.listdir(directory))


@contextlib.contextmanager
def _number_lock(directory: Path, number: int):
    """Yields True while this writer holds `number`, False if another writer holds it."""
    lock = directory / f".{number:05}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
                lock.unlink()  # left by a crashed writer; the next attempt may take it
        yield False
        return
    try:
        os.close(fd)
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _publish(temp: Path, final: Path) -> bool:
    """Give `temp` the name `final` without overwriting; False if `final` exists."""
    try:
        os.link(temp, final)
        return True
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this file system: we hold the number's lock, so a checked rename is safe.
        if final.exists():
            return False
        os.replace(temp, final)
        return True


def _write(image: Image.Image, path: Path, fmt: str, infotext: str | None) -> None:
    if fmt == "PNG":
        image.save(path, "PNG", pnginfo=png_info_with(infotext))
        return
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    kwargs: dict = {"quality": JPEG_QUALITY}
    if infotext:
        kwargs["exif"] = exif_with(infotext)
    image.save(path, fmt, **kwargs)


def save_image(
    image: Image.Image,
    directory: Path,
    seed: int,
    infotext: str | None,
    extension: str = "png",
    filename_pattern: str = "[seed]",
    fields: FilenameFields | None = None,
    add_number: bool = True,
) -> Path:
    """Save as `directory/NNNNN-<pattern>.<ext>` with the next free number (or `<pattern>.<ext>`, then
    `<pattern>-1.<ext>`... without `add_number`); never overwrites a file. `fields` feed the pattern's tags
    (default: only the seed is known). The file gets the process umask's permissions, like any other file."""
    fmt = FORMATS.get(extension.lower().lstrip("."))
    if fmt is None:
        raise ValueError(f"unsupported image format {extension!r}; supported: {', '.join(FORMATS)}")
    ext = extension.lower().lstrip(".")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    decoration = expand_pattern(filename_pattern, fields or FilenameFields(seed=seed))
    temp = _create_temp(directory, ext)
    try:
        _write(image, temp, fmt, infotext)
        if add_number or not decoration:
            return _publish_numbered(temp, directory, decoration, ext)
        return _publish_named(temp, directory, decoration, ext)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _create_temp(directory: Path, ext: str) -> Path:
    """An empty new file created with mode 0666 (less the umask); mkstemp would make it 0600."""
    for _ in range(100):
        path = directory / f".tmp-{secrets.token_hex(8)}.{ext}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue
    raise OSError(f"could not create a temporary file in {directory}")


def _publish_numbered(temp: Path, directory: Path, decoration: str, ext: str) -> Path:
    number = next_sequence_number(directory)
    for _ in range(_MAX_ATTEMPTS):
        final = directory / (f"{number:05}-{decoration}.{ext}" if decoration else f"{number:05}.{ext}")
        with _number_lock(directory, number) as held:
            if held and not _number_taken(directory, number) and _publish(temp, final):
                return final
        number += 1
    raise OSError(f"could not find a free file number in {directory}")


def _publish_named(temp: Path, directory: Path, decoration: str, ext: str) -> Path:
    for attempt in range(_MAX_ATTEMPTS):
        final = directory / (f"{decoration}-{attempt}.{ext}" if attempt else f"{decoration}.{ext}")
        if _publish(temp, final):
            return final
    raise OSError(f"could not find a free file name for {decoration!r} in {directory}")
