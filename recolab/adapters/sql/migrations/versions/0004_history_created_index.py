"""Index recommendation_history by created_at alone: the monitor flow counts the answers
since a time (`SqlMonitorData.answer_counts`), and the table's two indexes lead with
user_id or experiment, so without this one that count read the whole history, which grows
by up to ten rows an answer. Every answer writes one more index entry per row.

The ratings' `timestamp` (the monitor's ratings after a snapshot) stays unindexed: the
monitor reads them once a run, and an index would cost every bulk load (see 0002).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("idx_rec_history_created", "recommendation_history", ["created_at"])


def downgrade() -> None:
    op.drop_index("idx_rec_history_created", table_name="recommendation_history")
