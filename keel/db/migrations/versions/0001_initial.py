"""Initial schema: experiments, runs, params, tags, metric history and latest, artifacts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("name", name="uq_experiments_name"),
    )
    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", sa.Integer,
                  sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE",
                                name="fk_experiment_tags_experiment_id"),
                  primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "runs",
        # an integer key keeps the high-volume metric history compact (its index entries are
        # a third of the size with an integer than with the 32-character run id)
        sa.Column("run_key", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.Integer,
                  sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE",
                                name="fk_runs_experiment_id"),
                  nullable=False),
        sa.Column("run_name", sa.String(250), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user_name", sa.String(256), nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=False),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
        sa.Column("parent_run_id", sa.String(32), nullable=True),
        sa.Column("host", sa.String(256), nullable=False),
        sa.UniqueConstraint("run_id", name="uq_runs_run_id"),
    )
    op.create_index("ix_runs_experiment_id_lifecycle_stage_start_time", "runs",
                    ["experiment_id", "lifecycle_stage", "start_time"])
    op.create_index("ix_runs_status", "runs", ["status"])
    for name in ("params", "tags"):
        op.create_table(
            name,
            sa.Column("run_id", sa.String(32),
                      sa.ForeignKey("runs.run_id", ondelete="CASCADE", name=f"fk_{name}_run_id"),
                      primary_key=True),
            sa.Column("key", sa.String(250), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
    op.create_table(
        "metrics",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.BigInteger,
                  sa.ForeignKey("runs.run_key", ondelete="CASCADE", name="fk_metrics_run_key"),
                  nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("is_nan", sa.Boolean, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_metrics_run_key_key_step", "metrics", ["run_key", "key", "step"])
    op.create_table(
        "latest_metrics",
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("runs.run_id", ondelete="CASCADE",
                                name="fk_latest_metrics_run_id"),
                  primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("is_nan", sa.Boolean, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("runs.run_id", ondelete="CASCADE", name="fk_artifacts_run_id"),
                  primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for name in ("artifacts", "latest_metrics", "metrics", "tags", "params", "runs",
                 "experiment_tags", "experiments"):
        op.drop_table(name)
