"""The errors the application raises to its callers (each maps to one answer)."""

from recolab.domain.errors import DomainError, InvalidValue, MovieNotFound, NotFound, UserNotFound

__all__ = ["DomainError", "InvalidValue", "MovieNotFound", "NotFound", "UserNotFound"]
