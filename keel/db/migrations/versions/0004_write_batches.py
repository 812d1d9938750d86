"""Idempotent metric writes: the ids of the batches already applied.

A remote client gives every metric request a ``batch_id`` (a uuid) and retries it after a
connection error or a 5xx. The id is inserted in the same transaction as the batch's points, so
a batch sent twice is stored once: the second insert finds the id and the batch is skipped.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_batches",
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_write_batches"),
    )


def downgrade() -> None:
    op.drop_table("write_batches")
