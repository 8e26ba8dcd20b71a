"""What the domain refuses, in words a user can act on. The REST adapter maps each to Trove's body."""

from __future__ import annotations


class DomainError(Exception):
    """A command the domain refuses; nothing was recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DomainError):
    """The request itself is wrong (400 ``badRequest``)."""


class NotFound(DomainError):
    """No such thing, or not one this tenant may see (404 ``itemNotFound``)."""


class ActionNotAllowed(DomainError):
    """The instance is not in a state for this action (422 ``unprocessableEntity``)."""


class QuotaExceeded(DomainError):
    """The tenant's quota would be exceeded (413 ``overLimit``)."""

    def __init__(self, message: str, resources: dict[str, tuple[int, int, int]]) -> None:
        super().__init__(message)
        #: resource → (limit, in use or reserved, requested)
        self.resources = resources


class Forbidden(DomainError):
    """The caller may not do this (403 ``forbidden``)."""
