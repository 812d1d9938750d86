"""Deployments: named configurations of weighted primary model versions and shadows.

``deployments`` holds one row per name with the number of its current revision: the pointer
every change moves in the same transaction as it appends the revision, with a compare-and-set
on the number it read, so two writers never both build on the same revision.
``deployment_revisions`` is the append-only history: each row is a whole configuration (JSON:
primaries with weights, shadows), what each reference resolved to when it was written, the
action, who and why. Deleting a deployment deletes its history.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),  # the current one
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", name="pk_deployments"),
        sa.UniqueConstraint("name", name="uq_deployments_name"),
    )
    op.create_table(
        "deployment_revisions",
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),  # JSON: primaries, shadows
        sa.Column("resolved", sa.Text(), nullable=False),  # JSON object ref -> version
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "revision", name="pk_deployment_revisions"),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.deployment_id"],
            name="fk_deployment_revisions_deployment_id",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("deployment_revisions")
    op.drop_table("deployments")
