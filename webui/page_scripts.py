"""The page's scripts in the HTML Gradio serves at /, as A1111 puts them in its <head>.

Gradio adds its `head=` scripts from its front end, after `DOMContentLoaded`: an extension script listening
for that event (aspect ratio helper) never ran. Here the page's own <head> gets, before Gradio's module
script, our scripts inline (javascript/script.js, A1111's page API, first) and each extension script as
`<script src="file=...">` (sdwebui.api.file_route), in A1111's order; they run while the page is parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = b'<script type="module"'  # Gradio's page (not our login page, not another HTML route)


def scripts_html(own: list[Path], extension_urls: list[str]) -> bytes:
    inline = [f"<script>\n{path.read_text(encoding='utf-8')}\n</script>" for path in own if path.is_file()]
    tags = [f'<script type="text/javascript" src="{url}"></script>' for url in extension_urls]
    return "\n".join([*inline, *tags, ""]).encode("utf-8")


class PageScripts:
    """ASGI middleware: inserts `html()` before Gradio's module script in the page served at `path`."""

    def __init__(self, app: Any, html: Callable[[], bytes], path: str = "/"):
        self.app = app
        self.html = html
        self.path = path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_page(start, b"".join(chunks), send)

        await self.app(scope, receive, buffered)

    async def _send_page(self, start: dict[str, Any], body: bytes, send: Any) -> None:
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
        html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
        if start.get("status") == 200 and html and not encoded and MARKER in body:
            at = body.index(MARKER)
            body = body[:at] + self.html() + body[at:]
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
