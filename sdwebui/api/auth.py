"""Credentials for the API (HTTP Basic) and the UI (login page): constant-time compare, one rule for which
flag protects which side, login back-off, and who the caller is (for per-user task lists).

On a public listener both sides are always protected: a side without its own flag uses the other flag's
credentials (`--gradio-auth` alone also guards `/sdapi/v1`, `--api-auth` alone also guards the UI). On
loopback each flag guards only its own side, as in A1111. The admin is the first user of the credentials
list that guards the API: it sees every user's tasks.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from sdwebui.api.throttle import LoginThrottle, login_keys
from sdwebui.config.flags import is_public, parse_credentials

log = logging.getLogger("webui.auth")
_basic = HTTPBasic(auto_error=False)


@dataclass(frozen=True)
class Credentials:
    """user:password pairs from one flag; `admin` is the first user listed."""

    pairs: tuple[tuple[bytes, bytes], ...]
    admin: str

    @classmethod
    def parse(cls, value: str, flag: str) -> Credentials:
        creds = parse_credentials(value, flag)
        return cls(tuple((u.encode(), p.encode()) for u, p in creds.items()), next(iter(creds)))

    def check(self, user: str, password: str) -> bool:
        given_user, given_password = user.encode(), password.encode()
        ok = False
        for known_user, known_password in self.pairs:  # no early exit: timing does not reveal which user
            ok |= hmac.compare_digest(given_user, known_user) & hmac.compare_digest(
                given_password, known_password
            )
        return ok


@dataclass(frozen=True)
class AuthSetup:
    api: Credentials | None
    ui: Credentials | None


def auth_setup(args: argparse.Namespace) -> AuthSetup:
    api_flag, ui_flag = getattr(args, "api_auth", None), getattr(args, "gradio_auth", None)
    api = Credentials.parse(api_flag, "--api-auth") if api_flag else None
    ui = Credentials.parse(ui_flag, "--gradio-auth") if ui_flag else None
    if is_public(args):  # never one side open to the network while the other is locked
        api, ui = api or ui, ui or api
    return AuthSetup(api=api, ui=ui)


@dataclass(frozen=True)
class Caller:
    """Who sent an API request: `user` None when the API has no credentials (then everyone is admin)."""

    user: str | None
    admin: bool


def no_auth() -> Caller:
    return Caller(user=None, admin=True)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def too_many_attempts(wait: float) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many failed logins from this address or for this user; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def basic_auth_dependency(credentials: Credentials, throttle: LoginThrottle) -> Callable[..., Caller]:
    """A FastAPI dependency: the Caller for valid Basic credentials; 401 otherwise, 429 while backing off."""

    def check(request: Request, given: HTTPBasicCredentials | None = Depends(_basic)) -> Caller:
        if given is None:  # no guess made: nothing to throttle
            raise _unauthorized()
        keys = login_keys(client_address(request), given.username)
        wait = throttle.retry_after(keys)
        if wait > 0:
            raise too_many_attempts(wait)
        if not credentials.check(given.username, given.password):
            failures = throttle.failed(keys)
            log.warning(
                "failed API login for user %r from %s (%d in a row)",
                given.username,
                client_address(request),
                failures,
            )
            raise _unauthorized()
        throttle.succeeded(keys)
        return Caller(user=given.username, admin=given.username == credentials.admin)

    return check


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="incorrect or missing credentials",
        headers={"WWW-Authenticate": "Basic"},
    )
