"""One ASGI middleware in front of the API and the UI alike.

- `Host` must name this server: an IP literal, `localhost` (or `*.localhost`), `--server-name`, or an
  `--allowed-hosts` entry. A DNS-rebinding page sends its own domain name here, so it is refused.
- State-changing requests (anything but GET/HEAD/OPTIONS, and WebSocket handshakes) from a browser must come
  from this server's own origin or a `--cors-allow-origins` entry (CSRF). Clients that send no `Origin`
  (curl, scripts) pass; a browser that omits it still says `Sec-Fetch-Site: cross-site`.
- Request bodies above `--max-body-size` MB are refused with 413 before the app reads them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class GuardPolicy:
    allowed_hosts: frozenset[str]  # lower-case host names beyond IP literals and localhost; "*" = any
    allowed_origins: frozenset[str]  # cross-site origins the owner allowed (--cors-allow-origins)
    max_body_bytes: int


def policy_from_args(args: argparse.Namespace) -> GuardPolicy:
    hosts = {h.strip().lower() for h in (getattr(args, "allowed_hosts", None) or "").split(",") if h.strip()}
    if getattr(args, "server_name", None):
        hosts.add(args.server_name.strip().lower().strip("[]"))
    origins = {o.strip() for o in (getattr(args, "cors_allow_origins", None) or "").split(",") if o.strip()}
    max_mb = getattr(args, "max_body_size", None) or DEFAULT_MAX_BODY_MB
    return GuardPolicy(frozenset(hosts), frozenset(origins), int(max_mb * 1024 * 1024))


DEFAULT_MAX_BODY_MB = 128  # a --max-image-pixels (4096x4096) noise PNG in base64 is ~67 MB, plus a mask


def split_host(value: str) -> tuple[str, int | None]:
    """'Example.com:7860' -> ('example.com', 7860); '[::1]:80' -> ('::1', 80); bad port -> (name, -1)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""
    if not port_text:
        return name.rstrip("."), None
    return name.rstrip("."), int(port_text) if port_text.isdigit() else -1


def host_allowed(host: str, policy: GuardPolicy) -> bool:
    if "*" in policy.allowed_hosts:
        return True
    name, port = split_host(host)
    if port == -1 or not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True  # an IP literal cannot be re-pointed by DNS
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or name in policy.allowed_hosts


def same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    try:
        origin_port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    name, port = split_host(host)
    return parts.hostname.lower() == name and origin_port == (port or DEFAULT_PORTS[parts.scheme])


def refusal(scope: Scope, headers: dict[str, str], policy: GuardPolicy) -> tuple[int, str, str] | None:
    """(status, field, reason) when the request must be refused before the app sees it."""
    host = headers.get("host")
    if host is not None and not host_allowed(host, policy):
        return (
            403,
            "Host",
            (
                f"Host {host!r} is not a name of this server (DNS rebinding protection); "
                "add it with --allowed-hosts if you serve under that name"
            ),
        )
    state_changing = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
    origin = headers.get("origin")
    if state_changing and origin is not None and origin not in policy.allowed_origins:
        if host is None or not same_origin(origin, host):
            return (
                403,
                "Origin",
                (
                    f"cross-site request from origin {origin!r} refused (CSRF protection); "
                    "allow it with --cors-allow-origins"
                ),
            )
    if state_changing and origin is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return 403, "Origin", "cross-site request without an Origin refused (CSRF protection)"
    length = headers.get("content-length")
    if scope["type"] == "http" and length is not None and length.isdigit():
        if int(length) > policy.max_body_bytes:
            return 413, "body", _too_large(int(length), policy)
    return None


def _too_large(size: int | None, policy: GuardPolicy) -> str:
    mb = policy.max_body_bytes / (1024 * 1024)
    got = f"{size} bytes" if size is not None else "larger than that"
    return f"request body is {got}; the limit is {mb:g} MB (--max-body-size)"


class SecurityGuard:
    """ASGI middleware applying `refusal`, and the body cap to chunked bodies without a Content-Length."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = refusal(scope, headers, self.policy)
        if refused is not None:
            await _refuse(scope, send, *refused)
            return
        if scope["type"] == "http" and "content-length" not in headers and "transfer-encoding" in headers:
            body = await _read_capped(receive, self.policy.max_body_bytes)
            if body is None:
                await _refuse(scope, send, 413, "body", _too_large(None, self.policy))
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_capped(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body once, then the real channel (which reports the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(scope: Scope, send: Send, status: int, field: str, reason: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    error = {403: "Forbidden", 413: "RequestTooLarge"}[status]
    payload = json.dumps({"error": error, "detail": reason, "field": field}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
