"""The relational schema, as SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Table, column and index names are a contract: queries elsewhere and the Alembic
migrations in ``recolab/adapters/sql/migrations`` rely on them.

Identifier choices:

* ``users.id`` and ``movies.id`` come from the data (MovieLens ids) and have no sequence.
  A user registered through the API gets ``max(id) + 1``, allocated inside the INSERT
  itself (:func:`new_user_statement`), so it needs no sequence kept in step with loaded
  ids. Two concurrent registrations on PostgreSQL may pick the same id: one fails with
  an ``IntegrityError`` and should retry; SQLite serialises writers.
* Surrogate keys (``recommendation_history``, ``datasets_loaded``) are identity columns
  on PostgreSQL and ``INTEGER PRIMARY KEY`` (rowid) on SQLite.
* 64-bit ids are ``BIGINT`` on PostgreSQL and ``INTEGER`` on SQLite, where only an
  ``INTEGER PRIMARY KEY`` aliases the rowid (and SQLite integers are 64-bit anyway).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
    insert,
    literal,
    select,
)

# Deterministic constraint names, so migrations and both dialects agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

Id = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("n_ratings", Integer, nullable=False, server_default="0"),
    Column("avg_rating", Double, nullable=False, server_default="0"),
    # Kept next to avg_rating so a new rating can be applied with SQL-side increments.
    Column("rating_sum", Double, nullable=False, server_default="0"),
    Column("last_activity", Timestamp, nullable=True),
    Column("favorite_genres", Text, nullable=False, server_default=""),
    Index("idx_user_activity", "last_activity"),
    Index("idx_user_n_ratings", "n_ratings"),
)

movies = Table(
    "movies",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("title", String(500), nullable=False),
    Column("year", Integer, nullable=True),
    Column("genres", Text, nullable=False),
    Column("rating_count", Integer, nullable=False, server_default="0"),
    Column("avg_rating", Double, nullable=False, server_default="0"),
    Column("rating_sum", Double, nullable=False, server_default="0"),
    Column("popularity_score", Double, nullable=False, server_default="0"),
    Index("idx_movie_title", "title"),
    Index("idx_movie_rating_count", "rating_count"),
    Index("idx_movie_avg_rating", "avg_rating"),
    Index("idx_movie_popularity", "popularity_score"),
)

movie_genres = Table(
    "movie_genres",
    metadata,
    Column("movie_id", Id, ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True),
    Column("genre", String(64), primary_key=True),
    Index("idx_movie_genres_genre", "genre"),
    sqlite_with_rowid=False,
)

ratings = Table(
    "ratings",
    metadata,
    Column("user_id", Id, ForeignKey("users.id"), primary_key=True),
    Column("movie_id", Id, ForeignKey("movies.id"), primary_key=True),
    Column("score", Double, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    CheckConstraint("score >= 0.5 AND score <= 5.0", name="score_range"),
    Index("idx_rating_movie", "movie_id"),
    # A user's ratings come through the primary key, which leads with user_id (no
    # (user_id, timestamp) index: migration 0002 says what it cost).
    # SQLite: clustered on (user_id, movie_id), no separate primary-key index to maintain.
    sqlite_with_rowid=False,
)

recommendation_history = Table(
    "recommendation_history",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    Column("movie_id", Id, ForeignKey("movies.id"), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("score", Double, nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("source", String(32), nullable=False),
    Column("model_version", String(64), nullable=True),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    # Migration 0003: who was answered how, for online metrics and drift reports. `variant`
    # is champion / challenger (served) or shadow (scored off the request path, not shown);
    # `experiment` names the experiment the answer belonged to (None: no experiment ran).
    Column("tier", String(16), nullable=True),
    Column("fallback", Boolean, nullable=False, server_default=false()),
    Column("experiment", String(64), nullable=True),
    Column("variant", String(16), nullable=True),
    Index("idx_rec_history_user_created", "user_id", "created_at"),
    Index("idx_rec_history_experiment_created", "experiment", "created_at"),
    Index("idx_rec_history_created", "created_at"),  # migration 0004: the monitor's count
)

# Migration 0003: retrains the `monitor` flow asked for (drift or new ratings past a
# threshold), so that one condition triggers one retrain, not one per monitor run.
retrain_requests = Table(
    "retrain_requests",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("requested_at", Timestamp, nullable=False, server_default=func.now()),
    Column("reason", Text, nullable=False),
    Column("model_version", String(64), nullable=True),  # the champion when asked
    Column("snapshot_id", String(64), nullable=True),  # the champion's training snapshot
    Column("new_ratings", BigInteger, nullable=False, server_default="0"),
    Column("flow_run_id", String(64), nullable=True),  # the monitor run that asked
    Index("idx_retrain_requests_requested", "requested_at"),
)

datasets_loaded = Table(
    "datasets_loaded",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("dataset", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("n_ratings", BigInteger, nullable=False),
    Column("n_movies", BigInteger, nullable=False),
    Column("n_users", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("loaded_at", Timestamp, nullable=False, server_default=func.now()),
)


def new_user_statement() -> Insert:
    """``INSERT`` a user with the next free id (``max(id) + 1``) and return that id.

    Execute it and read ``.scalar_one()``; retry on ``IntegrityError`` under concurrency.
    """
    next_id = select(func.coalesce(func.max(users.c.id), literal(0)) + 1).scalar_subquery()
    return insert(users).values(id=next_id).returning(users.c.id)
