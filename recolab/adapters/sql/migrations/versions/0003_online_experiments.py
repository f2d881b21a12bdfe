"""Online experiments and monitoring: what each answer was (tier, fallback, experiment,
variant) in the recommendation history, and the retrains the monitor flow asked for.

Existing history rows keep NULL tier / experiment / variant and fallback false: they were
served before any experiment, by the champion.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("recommendation_history") as batch:
        batch.add_column(sa.Column("tier", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("fallback", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("experiment", sa.String(64), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(16), nullable=True))
    op.create_index(
        "idx_rec_history_experiment_created",
        "recommendation_history",
        ["experiment", "created_at"],
    )
    op.create_table(
        "retrain_requests",
        sa.Column("id", _Id, sa.Identity(), nullable=False),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("snapshot_id", sa.String(64), nullable=True),
        sa.Column("new_ratings", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_retrain_requests"),
    )
    op.create_index("idx_retrain_requests_requested", "retrain_requests", ["requested_at"])


def downgrade() -> None:
    op.drop_index("idx_retrain_requests_requested", table_name="retrain_requests")
    op.drop_table("retrain_requests")
    op.drop_index("idx_rec_history_experiment_created", table_name="recommendation_history")
    with op.batch_alter_table("recommendation_history") as batch:
        batch.drop_column("variant")
        batch.drop_column("experiment")
        batch.drop_column("fallback")
        batch.drop_column("tier")
