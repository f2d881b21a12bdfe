"""What the `monitor` flow reads from the database and the retrains it records
(`recolab.application.monitor.MonitorData`), on SQLite and PostgreSQL alike.

- the ratings after a snapshot: stored with a time after the snapshot's latest rating
  (ratings sent to the API carry the time they were sent; one changed since counts again);
- the recent answers: one answer is the history rows sharing (user_id, created_at,
  variant); shadow scorings were never shown and do not count;
- retrain requests: recorded at most once per champion version and snapshot, atomically
  (SQLite: a writer's transaction from BEGIN; PostgreSQL: a transaction-scoped advisory
  lock), so two monitor runs at once cannot both ask.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import SQLITE_BEGIN
from recolab.domain.experiments import SHADOW
from recolab.domain.model import UserClassification
from recolab.domain.services.drift import (
    AnswerCounts,
    RatingSample,
    RetrainRequest,
    already_asked,
)

# pg_advisory_xact_lock key of "recording a retrain request" (any fixed 64-bit number).
_REQUEST_LOCK = 0x7265_636F_6C61_6201
_R = s.retrain_requests


class SqlMonitorData:
    """`MonitorData` over the ratings, recommendation_history and retrain_requests tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ratings_after(self, timestamp: int) -> RatingSample:
        r = s.ratings
        query = select(r.c.user_id, r.c.movie_id, r.c.score).where(r.c.timestamp > timestamp)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            empty = np.empty(0, dtype=np.int64)
            return RatingSample(empty, empty, np.empty(0, dtype=np.float64))
        users, movies, scores = zip(*rows, strict=True)
        return RatingSample(
            np.asarray(users, dtype=np.int64),
            np.asarray(movies, dtype=np.int64),
            np.asarray(scores, dtype=np.float64),
        )

    def answer_counts(self, since: datetime) -> AnswerCounts:
        h = s.recommendation_history
        per_answer = (
            select(
                func.max(case((h.c.fallback, 1), else_=0)).label("fell_back"),
                func.max(case((h.c.tier == UserClassification.COLD_START.value, 1), else_=0)).label(
                    "cold"
                ),
            )
            .where(
                h.c.created_at >= _utc(since),
                or_(h.c.variant.is_(None), h.c.variant != SHADOW),
            )
            .group_by(h.c.user_id, h.c.created_at, h.c.variant)
            .subquery()
        )
        query = select(
            func.count(),
            func.coalesce(func.sum(per_answer.c.fell_back), 0),
            func.coalesce(func.sum(per_answer.c.cold), 0),
        )
        with self.engine.connect() as conn:
            answers, fallbacks, cold = conn.execute(query).one()
        return AnswerCounts(int(answers), int(fallbacks), int(cold))

    def last_request(self, model_version: str, snapshot_id: str) -> RetrainRequest | None:
        with self.engine.connect() as conn:
            return _last(conn, model_version, snapshot_id)

    def record_request(self, request: RetrainRequest, every: int) -> RetrainRequest | None:
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REQUEST_LOCK})
                last = _last(conn, request.model_version, request.snapshot_id)
                if already_asked(
                    last, request.model_version, request.snapshot_id, request.new_ratings, every
                ):
                    return None
                at = _utc(request.requested_at or datetime.now(UTC))
                result = conn.execute(
                    insert(_R).values(
                        requested_at=at,
                        reason=request.reason,
                        model_version=request.model_version,
                        snapshot_id=request.snapshot_id,
                        new_ratings=request.new_ratings,
                        flow_run_id=request.flow_run_id,
                    )
                )
                (key,) = result.inserted_primary_key or (None,)
        return RetrainRequest(
            model_version=request.model_version,
            snapshot_id=request.snapshot_id,
            reason=request.reason,
            new_ratings=request.new_ratings,
            requested_at=at,
            flow_run_id=request.flow_run_id,
            id=int(key) if key is not None else None,
        )

    def withdraw_request(self, request_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(_R).where(_R.c.id == request_id))

    def requests(self) -> list[RetrainRequest]:
        """Every recorded request, the oldest first (for reports and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_R).order_by(_R.c.id)).all()
        return [_request(row) for row in rows]


def _last(conn: Connection, model_version: str, snapshot_id: str) -> RetrainRequest | None:
    row = conn.execute(
        select(_R)
        .where(and_(_R.c.model_version == model_version, _R.c.snapshot_id == snapshot_id))
        .order_by(_R.c.id.desc())
        .limit(1)
    ).first()
    return _request(row) if row is not None else None


def _request(row: Row[Any]) -> RetrainRequest:
    m = row._mapping
    return RetrainRequest(
        model_version=m["model_version"],
        snapshot_id=m["snapshot_id"],
        reason=m["reason"],
        new_ratings=int(m["new_ratings"]),
        requested_at=_utc(m["requested_at"]),
        flow_run_id=m["flow_run_id"],
        id=int(m["id"]),
    )


def _utc(moment: datetime) -> datetime:
    """Aware UTC (SQLite stores datetimes without their zone: they are written as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
