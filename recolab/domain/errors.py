"""Domain errors: every rule violation is a `DomainError` with a message for the user."""

from __future__ import annotations


class DomainError(Exception):
    """Base class of errors raised by domain rules."""


class InvalidValue(DomainError, ValueError):
    """A value object or entity was given a value that breaks its invariant."""


class NotFound(DomainError, LookupError):
    """A referenced aggregate does not exist."""


class UserNotFound(NotFound):
    def __init__(self, user_id: object) -> None:
        super().__init__(f"user {user_id} not found")
        self.user_id = user_id


class MovieNotFound(NotFound):
    def __init__(self, movie_id: object) -> None:
        super().__init__(f"movie {movie_id} not found")
        self.movie_id = movie_id
