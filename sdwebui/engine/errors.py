"""The one error for bad input: a request (or setting) field with an invalid value -> HTTP 422 naming it."""

from __future__ import annotations


class RequestError(ValueError):
    """A request field has an invalid value. `field` names it with the API's name."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
