"""``metric_blocks``: a summary per (run, metric, block of 128 steps), for fast downsampling.

Filled from the existing history here; from then on each batch of points updates it in the
same transaction (keel/tracking/store_blocks.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BLOCK_STEPS = 128  # keel.tracking.store_blocks.BLOCK_STEPS when this revision was written


def upgrade() -> None:
    op.create_table(
        "metric_blocks",
        sa.Column("run_key", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Float(precision=53), nullable=True),
        sa.Column("max_value", sa.Float(precision=53), nullable=True),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("run_key", "key", "block", name="pk_metric_blocks"),
        sa.ForeignKeyConstraint(
            ["run_key"], ["runs.run_key"], name="fk_metric_blocks_run_key", ondelete="CASCADE"
        ),
    )
    # floor division (SQL's / truncates toward zero, and steps may be negative)
    block = (
        f"CASE WHEN step >= 0 THEN step / {BLOCK_STEPS} "
        f"ELSE -((-step - 1) / {BLOCK_STEPS}) - 1 END"
    )
    op.execute(
        "INSERT INTO metric_blocks (run_key, key, block, count, min_value, max_value, "
        "first_step, last_step, last_timestamp, last_value) "
        "SELECT run_key, key, blk, count(*), min(value), max(value), min(step), max(step), 0, "
        f"NULL FROM (SELECT run_key, key, {block} AS blk, value, step FROM metrics) AS s "
        "GROUP BY run_key, key, blk"
    )
    last = (
        "FROM metrics m WHERE m.run_key = metric_blocks.run_key AND m.key = metric_blocks.key "
        "AND m.step = metric_blocks.last_step ORDER BY m.timestamp DESC, m.id DESC LIMIT 1"
    )
    op.execute(
        f"UPDATE metric_blocks SET last_timestamp = (SELECT m.timestamp {last}), "
        f"last_value = (SELECT m.value {last})"
    )


def downgrade() -> None:
    op.drop_table("metric_blocks")
