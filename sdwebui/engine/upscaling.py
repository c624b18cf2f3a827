"""Plain resampling upscalers for the Extras tab and the API's extra-single-image (Lanczos, Nearest).

Model-based upscalers can join UPSCALERS later; callers only see names.
"""

from __future__ import annotations

from PIL import Image

# name -> Pillow resampling filter; "None" keeps the pixels (A1111 lists it first)
_FILTERS: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
UPSCALERS: list[str] = list(_FILTERS)
MAX_UPSCALE_FACTOR = 8.0
MAX_OUTPUT_SIDE = 8192


class UpscaleError(ValueError):
    """Bad upscaler name or size; `field` names the offending parameter."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def target_size(image: Image.Image, scale: float | tuple[int, int]) -> tuple[int, int]:
    """Output (width, height) for a factor or an explicit size."""
    if isinstance(scale, tuple):
        if len(scale) != 2:
            raise UpscaleError("size", f"expected (width, height), got {scale!r}")
        width, height = (int(v) for v in scale)
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise UpscaleError("upscaling_resize", f"must be a number, got {scale!r}")
        if not 0 < scale <= MAX_UPSCALE_FACTOR:
            raise UpscaleError("upscaling_resize", f"must be in (0, {MAX_UPSCALE_FACTOR:g}], got {scale:g}")
        width, height = round(image.width * scale), round(image.height * scale)
    for name, value in (("upscaling_resize_w", width), ("upscaling_resize_h", height)):
        if not 1 <= value <= MAX_OUTPUT_SIDE:
            raise UpscaleError(name, f"must be between 1 and {MAX_OUTPUT_SIDE}, got {value}")
    return width, height


def upscale(
    image: Image.Image, scale: float | tuple[int, int], upscaler_name: str = "Lanczos"
) -> Image.Image:
    """Resize `image` by a factor or to (width, height) with the named upscaler."""
    if upscaler_name not in _FILTERS:
        raise UpscaleError("upscaler_1", f"unknown upscaler {upscaler_name!r}; choose one of {UPSCALERS}")
    size = target_size(image, scale)
    resample = _FILTERS[upscaler_name]
    if resample is None:
        return image.copy()
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image.resize(size, resample=resample)
