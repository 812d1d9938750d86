"""An index on ``write_batches.created_at``, so pruning old batch ids is a range scan.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_write_batches_created_at", "write_batches", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_write_batches_created_at", table_name="write_batches")
