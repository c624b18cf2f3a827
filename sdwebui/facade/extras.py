"""A1111's `modules.extras`: `run_pnginfo`, what the PNG Info tab shows for an image."""

from __future__ import annotations

import html

from PIL import Image

from sdwebui.facade import images


def _html(text: str) -> str:
    return "<br>\n".join(html.escape(line) for line in text.split("\n"))


def run_pnginfo(image: Image.Image | None) -> tuple[str, str | None, str]:
    """('', infotext, HTML of every text item) as A1111 returns them; ('', '', '') without an image."""
    if image is None:
        return "", "", ""
    geninfo, items = images.read_info_from_image(image)
    items = {**({"parameters": geninfo} if geninfo else {}), **items}
    info = "".join(
        f"<div><p><b>{_html(str(k))}</b></p><p>{_html(str(v))}</p></div>\n" for k, v in items.items()
    )
    return "", geninfo, info or "<div><p>Nothing found in the image.</p></div>"
