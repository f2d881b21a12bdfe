"""Initial schema: users, movies, movie_genres, ratings, recommendation_history, datasets_loaded.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the schema's types: a migration must not follow later model edits.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
        sa.Column("n_ratings", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("avg_rating", sa.Double(), nullable=False, server_default="0"),
        sa.Column("rating_sum", sa.Double(), nullable=False, server_default="0"),
        sa.Column("last_activity", Timestamp, nullable=True),
        sa.Column("favorite_genres", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("idx_user_activity", "users", ["last_activity"])
    op.create_index("idx_user_n_ratings", "users", ["n_ratings"])

    op.create_table(
        "movies",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.Text(), nullable=False),
        sa.Column("rating_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("avg_rating", sa.Double(), nullable=False, server_default="0"),
        sa.Column("rating_sum", sa.Double(), nullable=False, server_default="0"),
        sa.Column("popularity_score", sa.Double(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_movies"),
    )
    op.create_index("idx_movie_title", "movies", ["title"])
    op.create_index("idx_movie_rating_count", "movies", ["rating_count"])
    op.create_index("idx_movie_avg_rating", "movies", ["avg_rating"])
    op.create_index("idx_movie_popularity", "movies", ["popularity_score"])

    op.create_table(
        "movie_genres",
        sa.Column("movie_id", Id, nullable=False),
        sa.Column("genre", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["movie_id"],
            ["movies.id"],
            name="fk_movie_genres_movie_id_movies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("movie_id", "genre", name="pk_movie_genres"),
        sqlite_with_rowid=False,
    )
    op.create_index("idx_movie_genres_genre", "movie_genres", ["genre"])

    op.create_table(
        "ratings",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("movie_id", Id, nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("score >= 0.5 AND score <= 5.0", name="ck_ratings_score_range"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ratings_user_id_users"),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.id"], name="fk_ratings_movie_id_movies"),
        sa.PrimaryKeyConstraint("user_id", "movie_id", name="pk_ratings"),
        sqlite_with_rowid=False,
    )
    op.create_index("idx_rating_movie", "ratings", ["movie_id"])
    op.create_index("idx_rating_user_ts", "ratings", ["user_id", "timestamp"])

    op.create_table(
        "recommendation_history",
        sa.Column("id", Id, sa.Identity(), nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("movie_id", Id, nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_recommendation_history_user_id_users"
        ),
        sa.ForeignKeyConstraint(
            ["movie_id"], ["movies.id"], name="fk_recommendation_history_movie_id_movies"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_recommendation_history"),
    )
    op.create_index(
        "idx_rec_history_user_created", "recommendation_history", ["user_id", "created_at"]
    )

    op.create_table(
        "datasets_loaded",
        sa.Column("id", Id, sa.Identity(), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("n_ratings", sa.BigInteger(), nullable=False),
        sa.Column("n_movies", sa.BigInteger(), nullable=False),
        sa.Column("n_users", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("loaded_at", Timestamp, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_datasets_loaded"),
    )


def downgrade() -> None:
    for table in (
        "datasets_loaded",
        "recommendation_history",
        "ratings",
        "movie_genres",
        "movies",
        "users",
    ):
        op.drop_table(table)
