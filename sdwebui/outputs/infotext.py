"""A1111 infotext: the "prompt / Negative prompt / key: value, ..." text stored with every image.

`create_infotext` writes A1111's format; `parse_infotext` follows A1111's `parse_generation_parameters`:
values come back as strings, as A1111 returns them (so JSON clients see the same thing), except the
defaults A1111 itself fills in with typed values (e.g. "Hires resize-1": 0). "WxH" values are split
into "<key>-1" / "<key>-2".

Deviations, both only where A1111 would lose data: a value starting with a double quote is quoted (A1111
writes it bare and reads it back unquoted), and an empty value parses as "" (A1111 drops the key).
Not reproduced: A1111's "Emphasis" default (needs the prompt parser), its version-based backcompat
flags, and style extraction; legacy combined sampler names ("DPM++ 2M Karras") are split into
"Sampler" + "Schedule type" here rather than at paste time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

# (sampler name as written, its Schedule type or None) -> (sampler, schedule) when a legacy combined name such
# as "DPM++ 2M Karras" splits; None keeps it as written. Supplied by the sampler registry (engine).
SamplerSplitter = Callable[[str, "str | None"], "tuple[str, str] | None"]


PNG_KEY = "parameters"
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"  # EXIF character code for UCS-2/UTF-16 text, as piexif writes it
_ASCII_PREFIX = b"ASCII\x00\x00\x00"

_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"

# Fields A1111 fills in when an infotext lacks them (the values mean "the default was used").
_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",  # A1111's default random source; infotexts without "RNG" were made with it
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": False,
}


def quote(value: Any) -> Any:
    """A1111's infotext quoting: JSON-quote values containing ',', ':' or a newline; leave others as they are."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return value
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """A1111's infotext; `params` in the order they should appear, None values left out."""
    params_text = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative_text = f"\n{_NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{params_text}".strip()


def parse_infotext(
    text: str, fill_defaults: bool = True, split_sampler: SamplerSplitter | None = None
) -> dict[str, Any]:
    """A1111's `parse_generation_parameters`: {"Prompt", "Negative prompt", <key>: <value string>, ...}.

    `fill_defaults=False` returns only what the text says (no A1111 defaults, no legacy-name splitting).
    """
    res: dict[str, Any] = {}
    prompt, negative_prompt = "", ""
    done_with_prompt = False
    *lines, lastline = text.strip().split("\n")
    if len(_RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE):
            done_with_prompt = True
            line = line[len(_NEGATIVE) :].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for key, value in _RE_PARAM.findall(lastline):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        size = _RE_IMAGESIZE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    if fill_defaults:
        _fill_a1111_defaults(res, split_sampler)
    return res


def _fill_a1111_defaults(res: dict[str, Any], split_sampler: SamplerSplitter | None) -> None:
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    _split_legacy_sampler_name(res, split_sampler)
    _split_legacy_sampler_name(res, split_sampler, "Hires sampler", "Hires schedule type")
    for key, value in _DEFAULTS.items():
        res.setdefault(key, value)
    if res["FP8 weight"] != "Disable":
        res.setdefault("Cache FP16 weight for LoRA", False)
    _restore_old_hires_fix_params(res)


def _split_legacy_sampler_name(
    res: dict[str, Any],
    split_sampler: SamplerSplitter | None,
    key: str = "Sampler",
    schedule_key: str = "Schedule type",
) -> None:
    """ "DPM++ 2M Karras" -> Sampler "DPM++ 2M", Schedule type "Karras" (A1111 does this when pasting; also
    for "Hires sampler" / "Hires schedule type", as A1111's get_hr_sampler_and_scheduler)."""
    name = res.get(key)
    if not name or split_sampler is None:
        return
    split = split_sampler(name, res.get(schedule_key))
    if split is not None:  # None: already a sampler's name, or an extension's ("Use same sampler" too)
        res[key], res[schedule_key] = split


def _restore_old_hires_fix_params(res: dict[str, Any]) -> None:
    """Pre-1.0 hires fix infotexts stored the first pass size; convert as A1111 does (default settings)."""
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(first_w), int(first_h)
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    if first_w == 0 or first_h == 0:
        scale = math.sqrt(512 * 512 / (width * height))
        first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def png_info_with(infotext: str | None) -> PngInfo:
    """PNG text chunks holding the infotext under "parameters" (tEXt, or iTXt when not Latin-1)."""
    info = PngInfo()
    if infotext:
        info.add_text(PNG_KEY, infotext)
    return info


def exif_with(infotext: str) -> Image.Exif:
    """EXIF holding the infotext as UserComment (UTF-16 "UNICODE"), as A1111 writes JPEG and WebP."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = _UNICODE_PREFIX + infotext.encode("utf-16-be")
    return exif


def _decode_user_comment(raw: bytes | str) -> str | None:
    if isinstance(raw, str):
        return raw or None
    if raw.startswith(_UNICODE_PREFIX):
        body = raw[len(_UNICODE_PREFIX) :]
        # piexif writes big-endian; some writers use little-endian: pick the one that decodes to text
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(encoding)
            except UnicodeDecodeError:
                continue
            if "\x00" not in text:
                return text
        return None
    if raw.startswith(_ASCII_PREFIX):
        return raw[len(_ASCII_PREFIX) :].decode("ascii", errors="replace").rstrip("\x00") or None
    return raw.decode("utf-8", errors="replace").rstrip("\x00") or None


def read_infotext(image: Image.Image) -> str | None:
    """The infotext stored in an image: PNG "parameters", else EXIF UserComment, else a JPEG comment."""
    text = image.info.get(PNG_KEY)
    if text:
        return str(text)
    try:
        user_comment = image.getexif().get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    except Exception:  # malformed EXIF must not stop reading the image's other metadata
        user_comment = None
    if user_comment:
        decoded = _decode_user_comment(user_comment)
        if decoded:
            return decoded
    comment = image.info.get("comment")
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", errors="replace")
    return comment or None
