"""HTTP Basic authentication for the API (--api-auth user:pass[,user2:pass2]), constant-time compare."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

_basic = HTTPBasic(auto_error=False)


def basic_auth_dependency(credentials: dict[str, str]) -> Callable[..., None]:
    """A FastAPI dependency accepting any of `credentials` ({user: password}); 401 otherwise."""
    pairs = [(user.encode(), password.encode()) for user, password in credentials.items()]

    def check(given: HTTPBasicCredentials | None = Depends(_basic)) -> None:
        ok = False
        if given is not None:
            user, password = given.username.encode(), given.password.encode()
            for known_user, known_password in pairs:  # no early exit: timing does not reveal which user
                ok |= hmac.compare_digest(user, known_user) & hmac.compare_digest(password, known_password)
        if not ok:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="incorrect or missing credentials",
                headers={"WWW-Authenticate": "Basic"},
            )

    return check
