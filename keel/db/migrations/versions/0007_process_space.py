"""``runs.process_space``: which boot and PID namespace a local run's ``pid`` belongs to.

Two containers may share a host name (a fixed ``hostname:`` in docker compose) and reuse the
same pids; a machine that rebooted reuses pids too. A pid is checked only by a process in the
same space; elsewhere the run is judged by its heartbeats.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("process_space", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("process_space")
