"""A1111's file-name patterns (`samples_filename_pattern`): `[seed]-[prompt_words]` -> `777-a_red_cube`.

Tags follow A1111's FilenameGenerator. Every expanded value is sanitized (no path separators, no control or
reserved characters, no leading dots), so a pattern can never name a file outside its output folder.
A tag whose value does not apply (`[batch_number]` with batch size 1) expands to nothing and drops the
literal text just before it, as A1111 does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

MAX_PART = 128  # A1111's max_filename_part_length
MAX_DECORATION_BYTES = 200  # leaves room for "NNNNN-" and the extension within a 255-byte name
PROMPT_WORDS = 8  # A1111's directories_max_prompt_words
_RE_TAG = re.compile(r"\[(\w+)((?:<[^>]*>)*)\]")
_RE_ARGS = re.compile(r"<([^>]*)>")
_RE_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RE_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
_SKIP = object()  # "nothing, and drop the text before it"


@dataclass
class FilenameFields:
    """What one saved image's name may be built from (A1111's `p` values for that image)."""

    seed: int = 0
    prompt: str = ""  # with styles applied
    prompt_no_styles: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str = ""
    scheduler: str = ""
    model_name: str = ""
    model_hash: str = ""
    vae_filename: str = ""
    clip_skip: int | None = None
    denoising: float | None = None
    batch_index: int = 0  # position in the batch (0-based)
    batch_size: int = 1
    iteration: int = 0  # batch number within the job (0-based)
    n_iter: int = 1
    all_seeds: list[int] = field(default_factory=list)
    job_timestamp: dt.datetime | None = None
    image: Image.Image | None = None


def sanitize_part(text: str, replace_spaces: bool = True) -> str:
    """A1111's sanitize_filename_part: no reserved characters, no leading/trailing dots or spaces."""
    if replace_spaces:
        text = text.replace(" ", "_")
    return _RE_UNSAFE.sub("_", text).strip(" .")[:MAX_PART].strip(" .")


def _prompt_words(prompt: str) -> str:
    words = [word for word in _RE_NONLETTERS.split(prompt) if word] or ["empty"]
    return sanitize_part(" ".join(words[:PROMPT_WORDS]), replace_spaces=False)


def _strftime(moment: dt.datetime, args: list[str], default: str) -> str:
    fmt = args[0] if args and args[0] else default
    try:
        return moment.strftime(fmt)
    except ValueError:
        return moment.strftime(default)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _number(value: float | None) -> str | None:
    return None if value is None else str(value)


_Tag = Callable[[FilenameFields, list[str], dt.datetime], object]

_TAGS: dict[str, _Tag] = {
    "seed": lambda f, a, now: str(f.seed),
    "seed_first": lambda f, a, now: str(f.all_seeds[0] if f.all_seeds else f.seed),
    "seed_last": lambda f, a, now: str(f.all_seeds[-1] if f.all_seeds else f.seed),
    "steps": lambda f, a, now: _number(f.steps),
    "cfg": lambda f, a, now: _number(f.cfg_scale),
    "width": lambda f, a, now: _number(f.width),
    "height": lambda f, a, now: _number(f.height),
    "styles": lambda f, a, now: sanitize_part(", ".join(s for s in f.styles if s != "None") or "None", False),
    "sampler": lambda f, a, now: sanitize_part(f.sampler, replace_spaces=False),
    "scheduler": lambda f, a, now: sanitize_part(f.scheduler, replace_spaces=False),
    "model_hash": lambda f, a, now: f.model_hash,
    "model_name": lambda f, a, now: sanitize_part(f.model_name, replace_spaces=False),
    "vae_filename": lambda f, a, now: sanitize_part(f.vae_filename or "None", replace_spaces=False),
    "clip_skip": lambda f, a, now: _number(f.clip_skip),
    "denoising": lambda f, a, now: _number(f.denoising) if f.denoising is not None else _SKIP,
    "date": lambda f, a, now: now.strftime("%Y-%m-%d"),
    "datetime": lambda f, a, now: _strftime(now, a, "%Y%m%d%H%M%S"),
    "job_timestamp": lambda f, a, now: (f.job_timestamp or now).strftime("%Y%m%d%H%M%S"),
    "prompt": lambda f, a, now: sanitize_part(f.prompt),
    "prompt_no_styles": lambda f, a, now: sanitize_part(f.prompt_no_styles),
    "prompt_spaces": lambda f, a, now: sanitize_part(f.prompt, replace_spaces=False),
    "prompt_words": lambda f, a, now: _prompt_words(f.prompt),
    "prompt_hash": lambda f, a, now: _hash(f.prompt),
    "negative_prompt_hash": lambda f, a, now: _hash(f.negative_prompt),
    "full_prompt_hash": lambda f, a, now: _hash(f"{f.prompt} {f.negative_prompt}"),
    "batch_number": lambda f, a, now: _SKIP if f.batch_size == 1 else str(f.batch_index + 1),
    "batch_size": lambda f, a, now: str(f.batch_size),
    "generation_number": lambda f, a, now: (
        _SKIP if f.n_iter == 1 and f.batch_size == 1 else str(f.iteration * f.batch_size + f.batch_index + 1)
    ),
    "image_hash": lambda f, a, now: _image_hash(f.image, a),
    "none": lambda f, a, now: "",
}

TAG_NAMES = tuple(_TAGS)


def _image_hash(image: Image.Image | None, args: list[str]) -> str:
    if image is None:
        return ""
    length = int(args[0]) if args and args[0].isdigit() else None
    return hashlib.sha256(image.tobytes()).hexdigest()[:length]


def unknown_tags(pattern: str) -> list[str]:
    """The `[tag]`s of `pattern` that are not file-name tags (a setting naming one is refused)."""
    return [m.group(1) for m in _RE_TAG.finditer(pattern) if m.group(1).lower() not in _TAGS]


def expand(pattern: str, fields: FilenameFields, now: dt.datetime | None = None) -> str:
    """The file name (without number and extension) that `pattern` gives for `fields`; may be ""."""
    now = now or dt.datetime.now()
    out = ""
    last = 0
    for match in _RE_TAG.finditer(pattern):
        literal = pattern[last : match.start()]
        last = match.end()
        tag = _TAGS.get(match.group(1).lower())
        if tag is None:  # kept as written, as A1111 does (a setting from a file may name an unknown tag)
            out += literal + match.group(0)
            continue
        value = tag(fields, _RE_ARGS.findall(match.group(2)), now)
        if value is _SKIP or value is None:
            continue  # drops the literal text before it too
        out += literal + str(value)
    out += pattern[last:]
    # the literal text is sanitized too: a pattern such as "../[seed]" stays inside the folder
    raw = _RE_UNSAFE.sub("_", out).strip(" .").encode("utf-8")[:MAX_DECORATION_BYTES]
    return raw.decode("utf-8", errors="ignore").strip(" .")
