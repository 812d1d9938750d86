"""Run liveness (pid, heartbeat) so killed runs are marked LOST; indexes for search by value.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.BigInteger, nullable=True))
    op.create_index("ix_latest_metrics_key_value", "latest_metrics", ["key", "value", "run_id"])
    if op.get_bind().dialect.name == "postgresql":
        # A btree entry is capped near 2.7 kB and param values may be longer: a hash index
        # serves =, IN and joins on the value with no size limit.
        for name in ("params", "tags"):
            op.create_index(f"ix_{name}_key_run_id", name, ["key", "run_id"])
            op.create_index(f"ix_{name}_value_hash", name, ["value"],
                            postgresql_using="hash")
    else:
        for name in ("params", "tags"):
            op.create_index(f"ix_{name}_key_value", name, ["key", "value", "run_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in ("params", "tags"):
            op.drop_index(f"ix_{name}_value_hash", name)
            op.drop_index(f"ix_{name}_key_run_id", name)
    else:
        for name in ("params", "tags"):
            op.drop_index(f"ix_{name}_key_value", name)
    op.drop_index("ix_latest_metrics_key_value", "latest_metrics")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("pid")
