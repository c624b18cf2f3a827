"""What every router of the API shares: the prefix, the declared error responses, the caller dependency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdwebui.api import models as m
from sdwebui.api.auth import Caller
from sdwebui.services import AppServices

API = "/sdapi/v1"

# every error body is an ErrorResponse (sdwebui.api.errors); declared so clients and fuzzers can rely on it
_ERRORS = {
    401: "missing or wrong credentials (--api-auth)",
    403: "a Host or cross-site Origin the server does not accept",
    404: "no such route",
    409: "the task was cancelled, or force_task_id is taken",
    413: "the request body is over --max-body-size",
    422: "a field is invalid or over a limit; `field` names it",
    429: "too many failed logins from this address or for this user; retry after Retry-After seconds",
    500: "a server fault while running the job",
    503: "the queue is full",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorResponse, "description": text} for code, text in _ERRORS.items()
}
ASYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": m.TaskSubmitted, "description": "with ?async=true: queued; fetch the result at status_url"}
}


@dataclass(frozen=True)
class RouteContext:
    """Handed to each router builder: the app's services and the dependency that returns the Caller
    (the auth dependency again, which FastAPI evaluates once per request, or no_auth)."""

    services: AppServices
    current_caller: Callable[..., Caller]


def visible(job: Any, caller: Caller) -> bool:
    """Each API user sees their own tasks; the admin (and everyone, without credentials) sees all."""
    return caller.admin or job.owner == caller.user
