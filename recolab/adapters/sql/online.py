"""An experiment's answers and the ratings that followed them, read as columns for the
online report (`recolab.domain.services.online`), on SQLite and PostgreSQL.

Three queries, streamed `chunk_rows` rows at a time into typed numpy columns (no row objects
kept): the answers, grouped by the database (one row per (user, created_at, variant): the
history keeps one row per served item); the served items, all numbers (the variant as a
code); the ratings of the (user, movie) pairs served, in the answers' time span plus the
window (nothing else can be a hit), found through the ratings' primary key. Times are epoch
seconds computed in SQL, the same expression for answers and items, so they match exactly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Double,
    Engine,
    Select,
    and_,
    case,
    cast,
    func,
    literal,
    select,
)

from recolab.adapters.sql import schema as s
from recolab.domain.experiments import VARIANTS
from recolab.domain.services.online import Answers, ExperimentData, Feedback, Popularity

CHUNK_ROWS = 250_000


def _epoch(column: Any, dialect: str) -> ColumnElement[float]:
    """A timestamp column as epoch seconds (float, to the microsecond)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", column), Double)
    # SQLite keeps DateTime as text, 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC): whole seconds by
    # strftime, the fraction from the text (julianday would round it to the millisecond).
    whole = cast(func.strftime("%s", column), Double)
    return whole + cast(func.substr(column, 20), Double)


def _variant_code(column: Any) -> ColumnElement[int]:
    whens = [(column == name, literal(i)) for i, name in enumerate(VARIANTS)]
    return case(*whens, else_=literal(len(VARIANTS)))


def _columns(
    conn: Connection, query: Select[Any], dtypes: list[tuple[str, Any]], chunk_rows: int
) -> dict[str, np.ndarray]:
    """`query`'s rows as one numpy column per (name, dtype), read `chunk_rows` at a time.
    Text columns (dtype object) end as fixed-width str arrays (as wide as their longest)."""
    record = np.dtype(dtypes)
    parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in dtypes}
    result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(query)
    for rows in result.partitions(chunk_rows):
        block = np.array([tuple(row) for row in rows], dtype=record)
        for name, _ in dtypes:
            parts[name].append(np.ascontiguousarray(block[name]))
        del block
    out = {}
    for name, dtype in dtypes:
        chunks = parts.pop(name)
        column = np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)
        out[name] = column.astype(str) if np.dtype(dtype) == np.dtype(object) else column
    return out


class SqlExperimentHistory:
    """The `ExperimentHistory` port on the history, ratings and movies tables."""

    def __init__(self, engine: Engine, *, chunk_rows: int = CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.engine = engine
        self.chunk_rows = chunk_rows

    def read(self, experiment: str, *, since: float | None, window_s: float) -> ExperimentData:
        """The answers of `experiment` from `since` (epoch seconds; None: all), the ratings
        that may be hits for them (`window_s` after each), and the catalogue's popularity."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # one snapshot for the three reads (SQLite's one transaction already is)
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            answers = self.answers(conn, experiment, since)
            feedback = self.feedback(conn, experiment, since, answers, window_s)
            popularity = self.popularity(conn)
        return ExperimentData(answers, feedback, popularity)

    def _where(self, experiment: str, since: float | None) -> list[ColumnElement[bool]]:
        h = s.recommendation_history.c
        where = [h.experiment == experiment]
        if since is not None:
            where.append(h.created_at >= datetime.fromtimestamp(since, UTC))
        return where

    def answers(self, conn: Connection, experiment: str, since: float | None) -> Answers:
        h = s.recommendation_history.c
        dialect = conn.dialect.name
        at, code = _epoch(h.created_at, dialect), _variant_code(h.variant)
        where = self._where(experiment, since)
        grouped = (
            select(
                h.user_id,
                at.label("at"),
                code.label("code"),
                func.coalesce(h.variant, "").label("variant"),
                func.coalesce(func.min(h.model_version), "").label("model_version"),
                func.min(h.strategy).label("strategy"),
                func.coalesce(func.min(h.tier), "").label("tier"),
            )
            .where(*where)
            .group_by(h.user_id, h.created_at, h.variant)
        )
        head = _columns(
            conn,
            grouped,
            [
                ("user", np.int64),
                ("at", np.float64),
                ("code", np.int64),
                ("variant", object),
                ("model_version", object),
                ("strategy", object),
                ("tier", object),
            ],
            self.chunk_rows,
        )
        items = _columns(
            conn,
            select(h.user_id, at.label("at"), code.label("code"), h.movie_id, h.rank).where(*where),
            [
                ("user", np.int64),
                ("at", np.float64),
                ("code", np.int64),
                ("movie", np.int64),
                ("rank", np.int64),
            ],
            self.chunk_rows,
        )
        return Answers(
            head["user"],
            head["at"],
            head["variant"],
            head["model_version"],
            head["strategy"],
            head["tier"],
            _answer_of(head, items),
            items["movie"],
            items["rank"],
        )

    def feedback(
        self,
        conn: Connection,
        experiment: str,
        since: float | None,
        answers: Answers,
        window_s: float,
    ) -> Feedback:
        """The ratings of served (user, movie) pairs from the first answer's second to the
        last answer's window's end."""
        if len(answers) == 0:
            none = np.empty(0, dtype=np.int64)
            return Feedback(none, none, none)
        h, r = s.recommendation_history.c, s.ratings.c
        first = math.floor(float(answers.created_at.min()))
        last = math.floor(float(answers.created_at.max())) + math.ceil(window_s)
        pairs = (
            select(h.user_id, h.movie_id).where(*self._where(experiment, since)).distinct()
        ).subquery()
        query = (
            select(r.user_id, r.movie_id, r.timestamp)
            .select_from(s.ratings)
            .join(pairs, and_(r.user_id == pairs.c.user_id, r.movie_id == pairs.c.movie_id))
            .where(r.timestamp >= first, r.timestamp <= last)
        )
        got = _columns(
            conn,
            query,
            [("user", np.int64), ("movie", np.int64), ("timestamp", np.int64)],
            self.chunk_rows,
        )
        return Feedback(got["user"], got["movie"], got["timestamp"])

    def popularity(self, conn: Connection) -> Popularity:
        """Every movie of the catalogue and its number of ratings."""
        m = s.movies.c
        got = _columns(
            conn,
            select(m.id, m.rating_count),
            [("movie", np.int64), ("count", np.int64)],
            self.chunk_rows,
        )
        return Popularity(got["movie"], got["count"])


def _answer_of(head: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> np.ndarray:
    """For each item, the row of its answer in `head`: the one with its (user, time,
    variant code), by one sort of both key sets together."""
    n = head["user"].size
    columns = [np.concatenate([head[c], items[c]]) for c in ("code", "at", "user")]
    order = np.lexsort(columns)  # the last key first: user, time, code
    keys = [c[order] for c in columns]
    new_key = np.ones(order.size, dtype=bool)
    new_key[1:] = np.any([k[1:] != k[:-1] for k in keys], axis=0)
    group = np.cumsum(new_key) - 1
    row_of = np.full(int(group[-1]) + 1 if group.size else 0, -1, dtype=np.int64)
    is_head = order < n
    row_of[group[is_head]] = order[is_head]
    found = np.empty(order.size - n, dtype=np.int64)
    found[order[~is_head] - n] = row_of[group[~is_head]]
    if found.size and found.min() < 0:  # written between the two reads: not grouped
        raise RuntimeError("an answer's items were read without the answer")
    return found
