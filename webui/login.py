"""The UI's login: our own page and session cookie in front of Gradio (its `auth_dependency`).

Gradio's built-in login page embeds the whole API description (`window.gradio_api_info`: every endpoint,
checkpoint titles, extension names) before anyone logs in, and has no back-off. Here an anonymous visitor of
`/` gets a plain form and nothing else; Gradio's own routes answer 401 until the session cookie is valid.
"""

from __future__ import annotations

import html
import logging
import secrets
import threading
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sdwebui.api.auth import Credentials, client_address
from sdwebui.api.throttle import LoginThrottle, login_keys

log = logging.getLogger("webui.auth")
COOKIE = "sdwebui-session"
MAX_SESSIONS = 1000  # oldest sessions are forgotten first (bounded memory)


class UiLogin:
    def __init__(self, credentials: Credentials, throttle: LoginThrottle):
        self.credentials = credentials
        self.throttle = throttle
        self._sessions: OrderedDict[str, str] = OrderedDict()  # token -> user
        self._lock = threading.Lock()

    def user(self, request: Request) -> str | None:
        """The logged-in user of `request`, or None (Gradio's auth_dependency)."""
        token = request.cookies.get(COOKIE)
        with self._lock:
            return self._sessions.get(token) if token else None

    async def login(self, request: Request) -> Response:
        try:
            form = await request.form()
        except Exception:  # malformed body: a clear page, not a 500
            return login_page("could not read the login form", status=400)
        user, password = str(form.get("username") or ""), str(form.get("password") or "")
        keys = login_keys(client_address(request), user)
        wait = self.throttle.retry_after(keys)
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            message = f"Too many failed logins; try again in {seconds} s."
            return login_page(message, status=429, headers={"Retry-After": str(seconds)})
        if not self.credentials.check(user, password):
            failures = self.throttle.failed(keys)
            log.warning(
                "failed UI login for user %r from %s (%d in a row)", user, client_address(request), failures
            )
            return login_page("Incorrect user name or password.", status=401)
        self.throttle.succeeded(keys)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = user
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
        )
        return response

    def logout(self, request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        with self._lock:
            self._sessions.pop(token or "", None)
        response = RedirectResponse("./", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


class LoginGate:
    """ASGI middleware: `/login`, `/logout`, and the login page for anonymous visitors of `/`."""

    def __init__(self, app: Any, login: UiLogin):
        self.app = app
        self.login = login

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ("/", "/login", "/logout"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        method, path = request.method, scope["path"]
        if path == "/login" and method == "POST":
            response = await self.login.login(request)
        elif path == "/logout" and method in ("GET", "POST"):
            response = self.login.logout(request)
        elif method in ("GET", "HEAD") and self.login.user(request) is None:
            response = login_page(None)
        elif path == "/login":  # already logged in
            response = RedirectResponse("./", status_code=303)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def login_page(message: str | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Stable Diffusion - login</title>
<style>body{{font-family:sans-serif;display:flex;justify-content:center;margin-top:10vh}}
form{{display:flex;flex-direction:column;gap:.6em;width:18em}}.error{{color:#b00}}</style></head>
<body><form method="post" action="login"><h1>Stable Diffusion</h1>{note}
<label>User name <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"
required></label><button type="submit" id="login">Log in</button></form></body></html>"""
    return HTMLResponse(body, status_code=status, headers=headers)
