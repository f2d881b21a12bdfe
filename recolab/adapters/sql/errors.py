"""How database errors read to the rest of RecoLab: which may pass on retry, which are conflicts."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

DatabaseError = SQLAlchemyError  # every error the SQL adapters raise


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass on retry: lost database connections, timeouts, deadlocks."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | TimeoutError | ConnectionError)


def is_conflict(exc: BaseException) -> bool:
    """Whether a write lost a race on a unique key (e.g. two registrations took one id)."""
    return isinstance(exc, IntegrityError)
